//! The Redis tier's version guards, driven through the hot-tier API on a real Redis: late
//! writers and slow repopulations never replace a newer value.

use flowstate::config::TtlConfig;
use flowstate::hot::{HotTier, RedisHot};
use flowstate::keys::Keys;
use flowstate::ttl::Ttls;
use flowstate::{Config, DocKind, Document};

use crate::helpers::redis_url;

fn doc(name: &str, version: i64) -> Document {
    Document {
        flow_id: "f".into(),
        name: name.into(),
        body: serde_json::json!({"v": version})
            .as_object()
            .unwrap()
            .clone(),
        saved_at: time::OffsetDateTime::now_utc(),
        version,
    }
}

#[tokio::test]
async fn a_phase_save_invalidates_the_state_without_letting_an_older_fill_in() {
    let mut cfg = Config::default().redis;
    cfg.url = Some(redis_url());
    let prefix = format!("test:{}:", uuid::Uuid::now_v7().simple());
    let hot = RedisHot::connect(&cfg, Keys::new(prefix), Ttls::new(TtlConfig::default())).unwrap();
    hot.prepare().await.unwrap();
    let version = |d: Option<Document>| d.map(|d| d.version);

    hot.put_document(DocKind::State, &doc("", 5), "running", true)
        .await
        .unwrap();
    hot.put_document(DocKind::State, &doc("", 3), "running", true)
        .await
        .unwrap();
    assert_eq!(
        version(hot.get_document(DocKind::State, "f", "").await.unwrap()),
        Some(5),
        "a late write loses"
    );

    hot.put_document(DocKind::Phase, &doc("analysis", 1), "running", true)
        .await
        .unwrap();
    assert_eq!(
        hot.get_document(DocKind::State, "f", "").await.unwrap(),
        None,
        "invalidated by the phase save"
    );
    hot.put_document(DocKind::State, &doc("", 4), "running", false)
        .await
        .unwrap();
    assert_eq!(
        hot.get_document(DocKind::State, "f", "").await.unwrap(),
        None,
        "an older fill is refused"
    );
    hot.put_document(DocKind::State, &doc("", 5), "running", false)
        .await
        .unwrap();
    assert_eq!(
        version(hot.get_document(DocKind::State, "f", "").await.unwrap()),
        Some(5),
        "the current version fills again"
    );
}
