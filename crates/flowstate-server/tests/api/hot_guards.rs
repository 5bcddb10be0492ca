//! The hot tiers' ordering guards, one suite run against both tiers (in-process memory, and
//! Redis through its Lua scripts): late writers and slow repopulations never replace a newer
//! value, and nothing written about a deleted flow reaches the flow registered after it under
//! the same id. Each test plays the writes in the order a race would deliver them.

use flowstate::config::TtlConfig;
use flowstate::hot::keys::Keys;
use flowstate::hot::ttl::Ttls;
use flowstate::hot::{CachedFlow, HotTier, MemoryHot, RedisHot};
use flowstate::model::DeletedFlow;
use flowstate::{Config, DocKind, Document, Flow, Owner, Snapshot, Transition};

use crate::helpers::redis_url;

/// Both tiers, the Redis one under a key prefix of its own.
async fn tiers() -> Vec<(&'static str, Box<dyn HotTier>)> {
    let mut cfg = Config::default().redis;
    cfg.url = Some(redis_url());
    let prefix = format!("test:{}:", uuid::Uuid::now_v7().simple());
    let redis = RedisHot::connect(
        &cfg,
        &Default::default(),
        Keys::new(prefix),
        Ttls::new(TtlConfig::default()),
        Default::default(),
    )
    .unwrap();
    redis.prepare().await.unwrap();
    vec![
        (
            "memory",
            Box::new(MemoryHot::new(
                Ttls::new(TtlConfig::default()),
                &Default::default(),
            )),
        ),
        ("redis", Box::new(redis)),
    ]
}

/// Flow `f` in its `incarnation`-th life, at `version`.
fn flow(incarnation: i64, version: i64, status: &str) -> Flow {
    let at = time::OffsetDateTime::now_utc();
    Flow {
        sensitive: false,
        flow_id: "f".into(),
        flow_type: "t".into(),
        parent_flow_id: None,
        status: status.into(),
        metadata: Default::default(),
        created_at: at,
        updated_at: at,
        version,
        incarnation,
    }
}

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

fn snapshot(id: &str) -> Snapshot {
    Snapshot {
        flow_id: "f".into(),
        snapshot_id: id.into(),
        parent_snapshot_id: None,
        state: Default::default(),
        created_at: time::OffsetDateTime::now_utc(),
    }
}

async fn has_snapshot(hot: &dyn HotTier, id: &str) -> bool {
    hot.get_snapshot("f", id).await.unwrap().is_some()
}

fn owner(incarnation: i64) -> Owner {
    Owner {
        status: "running".into(),
        incarnation,
    }
}

fn transition() -> Transition {
    Transition {
        id: 0,
        from: "a".into(),
        to: "b".into(),
        at: time::OffsetDateTime::now_utc(),
        metadata: Default::default(),
    }
}

fn deleted(f: &Flow) -> DeletedFlow {
    DeletedFlow {
        flow: f.clone(),
        documents: vec![(DocKind::Phase, "analysis".into())],
        snapshots: Vec::new(),
    }
}

/// What the tier answers for `f`: its (incarnation, version, status), or "deleted" / "missing".
async fn cached(hot: &dyn HotTier) -> String {
    match hot.get_flow("f").await.unwrap() {
        CachedFlow::Present(f) => format!("{}/{} {}", f.incarnation, f.version, f.status),
        CachedFlow::Deleted => "deleted".into(),
        CachedFlow::Missing => "missing".into(),
    }
}

async fn phase_version(hot: &dyn HotTier) -> Option<i64> {
    let d = hot.get_document(DocKind::Phase, "f", "analysis").await;
    d.unwrap().map(|d| d.version)
}

#[tokio::test]
async fn older_versions_never_replace_newer_ones_and_tombstones_hold() {
    for (tier, hot) in tiers().await {
        let hot = hot.as_ref();
        hot.register_flow(&flow(1, 1, "initializing"), &[])
            .await
            .unwrap();
        hot.record_transition(&flow(1, 3, "done"), &transition(), &[])
            .await
            .unwrap();
        // A slow fill or a late transition write carrying an older version loses.
        hot.cache_flow(&flow(1, 2, "running")).await.unwrap();
        hot.record_transition(&flow(1, 2, "running"), &transition(), &[])
            .await
            .unwrap();
        assert_eq!(cached(hot).await, "1/3 done", "{tier}");
        // A slow registration of the same flow cannot roll it back either.
        hot.register_flow(&flow(1, 1, "initializing"), &[])
            .await
            .unwrap();
        assert_eq!(cached(hot).await, "1/3 done", "{tier}");

        hot.remove_flows(&[deleted(&flow(1, 3, "done"))], &[])
            .await
            .unwrap();
        hot.cache_flow(&flow(1, 3, "done")).await.unwrap();
        assert_eq!(
            cached(hot).await,
            "deleted",
            "{tier}: a fill cannot revive it"
        );
        hot.register_flow(&flow(1, 1, "initializing"), &[])
            .await
            .unwrap();
        assert_eq!(
            cached(hot).await,
            "deleted",
            "{tier}: nor a late registration of the deleted flow"
        );
        // Forgetting (a ledger write of unknown outcome) drops records, not tombstones.
        hot.forget("f", None).await.unwrap();
        hot.cache_flow(&flow(1, 3, "done")).await.unwrap();
        assert_eq!(cached(hot).await, "deleted", "{tier}");
        hot.register_flow(&flow(2, 1, "initializing"), &[])
            .await
            .unwrap();
        assert_eq!(
            cached(hot).await,
            "2/1 initializing",
            "{tier}: a new registration of the id can"
        );
        hot.forget("f", None).await.unwrap();
        assert_eq!(cached(hot).await, "missing", "{tier}");
    }
}

#[tokio::test]
async fn late_writes_about_a_deleted_flow_never_reach_its_successor() {
    for (tier, hot) in tiers().await {
        let hot = hot.as_ref();
        let old = flow(1, 5, "running");
        hot.register_flow(&flow(1, 1, "initializing"), &[])
            .await
            .unwrap();
        hot.put_document(DocKind::Phase, &doc("analysis", 7), &owner(1), true, &[])
            .await
            .unwrap();

        // Deleted, and registered again at once, before the late writes below arrive.
        hot.remove_flows(&[deleted(&old)], &[]).await.unwrap();
        assert_eq!(
            phase_version(hot).await,
            None,
            "{tier}: documents go with it"
        );
        hot.put_document(DocKind::Phase, &doc("analysis", 8), &owner(1), true, &[])
            .await
            .unwrap();
        assert_eq!(
            phase_version(hot).await,
            None,
            "{tier}: a late document write cannot outlive the delete"
        );
        hot.register_flow(&flow(2, 1, "initializing"), &[])
            .await
            .unwrap();

        // Late writes about the first life, with higher versions than the second has.
        hot.record_transition(&flow(1, 6, "done"), &transition(), &[])
            .await
            .unwrap();
        hot.cache_flow(&old).await.unwrap();
        hot.put_document(DocKind::Phase, &doc("analysis", 9), &owner(1), false, &[])
            .await
            .unwrap();
        hot.put_snapshot(&snapshot("s1"), &[], &owner(1), true)
            .await
            .unwrap();
        assert_eq!(cached(hot).await, "2/1 initializing", "{tier}");
        assert_eq!(phase_version(hot).await, None, "{tier}");
        assert!(
            !has_snapshot(hot, "s1").await,
            "{tier}: nor a late snapshot"
        );
        hot.put_snapshot(&snapshot("s1"), &[], &owner(2), true)
            .await
            .unwrap();
        assert!(
            has_snapshot(hot, "s1").await,
            "{tier}: the new flow's own snapshot"
        );

        // A delete of the first life that arrives late leaves the second's record alone; its
        // documents are dropped (they might have been the first life's), and fill again.
        hot.put_document(DocKind::Phase, &doc("analysis", 1), &owner(2), true, &[])
            .await
            .unwrap();
        hot.remove_flows(&[deleted(&old)], &[]).await.unwrap();
        assert_eq!(cached(hot).await, "2/1 initializing", "{tier}");
        assert_eq!(phase_version(hot).await, None, "{tier}");
        hot.put_document(DocKind::Phase, &doc("analysis", 1), &owner(2), false, &[])
            .await
            .unwrap();
        assert_eq!(phase_version(hot).await, Some(1), "{tier}");

        // The second life goes on as usual.
        hot.record_transition(&flow(2, 2, "running"), &transition(), &[])
            .await
            .unwrap();
        assert_eq!(cached(hot).await, "2/2 running", "{tier}");
    }
}

#[tokio::test]
async fn a_delete_overtaken_by_the_next_registration_still_clears_the_old_documents() {
    for (tier, hot) in tiers().await {
        let hot = hot.as_ref();
        let old = flow(1, 1, "initializing");
        hot.register_flow(&old, &[]).await.unwrap();
        hot.put_document(DocKind::Phase, &doc("analysis", 7), &owner(1), true, &[])
            .await
            .unwrap();
        // The id is registered again, and that reaches the tier before the delete does.
        hot.register_flow(&flow(2, 1, "initializing"), &[])
            .await
            .unwrap();
        hot.remove_flows(&[deleted(&old)], &[]).await.unwrap();
        assert_eq!(cached(hot).await, "2/1 initializing", "{tier}");
        assert_eq!(
            phase_version(hot).await,
            None,
            "{tier}: the deleted flow's document is not served to its successor"
        );
    }
}

#[tokio::test]
async fn a_phase_save_invalidates_the_state_without_letting_an_older_fill_in() {
    for (tier, hot) in tiers().await {
        let hot = hot.as_ref();
        let version = |d: Option<Document>| d.map(|d| d.version);

        hot.put_document(DocKind::State, &doc("", 5), &owner(1), true, &[])
            .await
            .unwrap();
        hot.put_document(DocKind::State, &doc("", 3), &owner(1), true, &[])
            .await
            .unwrap();
        assert_eq!(
            version(hot.get_document(DocKind::State, "f", "").await.unwrap()),
            Some(5),
            "{tier}: a late write loses"
        );

        hot.put_document(DocKind::Phase, &doc("analysis", 1), &owner(1), true, &[])
            .await
            .unwrap();
        assert_eq!(
            hot.get_document(DocKind::State, "f", "").await.unwrap(),
            None,
            "{tier}: invalidated by the phase save"
        );
        hot.put_document(DocKind::State, &doc("", 4), &owner(1), false, &[])
            .await
            .unwrap();
        assert_eq!(
            hot.get_document(DocKind::State, "f", "").await.unwrap(),
            None,
            "{tier}: an older fill is refused"
        );
        hot.put_document(DocKind::State, &doc("", 5), &owner(1), false, &[])
            .await
            .unwrap();
        assert_eq!(
            version(hot.get_document(DocKind::State, "f", "").await.unwrap()),
            Some(5),
            "{tier}: the current version fills again"
        );
    }
}
