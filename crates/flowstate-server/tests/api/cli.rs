//! The `flowstate` CLI against a running server: health, flows ls / show / tree.

use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app};

pub(crate) async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(args)
        .env("FLOWSTATE_URL", &app.base)
        .env("RUST_LOG", "off")
        .output()
        .await
        .expect("the flowstate binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn health_ls_show_tree() {
    let app = spawn_app(Backend::Embedded).await;
    app.register(json!({"flow_id": "root", "flow_type": "orchestration"}))
        .await;
    app.register(json!({"flow_id": "a", "flow_type": "research", "parent_flow_id": "root"}))
        .await;
    app.register(json!({"flow_id": "a1", "flow_type": "research", "parent_flow_id": "a"}))
        .await;
    app.register(json!({"flow_id": "b", "flow_type": "review", "parent_flow_id": "root"}))
        .await;
    app.post(
        "/v1/flows/b/transitions",
        json!({"from": "initializing", "to": "running"}),
    )
    .await;

    let (ok, out, _) = cli(&app, &["health"]).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("status: healthy\n"), "{out}");
    assert!(out.contains("alerts: none"), "{out}");
    let (ok, out, _) = cli(&app, &["health", "--json"]).await;
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "healthy");
    assert_eq!(report["alerts"], json!([]));

    let (ok, out, _) = cli(&app, &["flows", "tree", "root"]).await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "root [orchestration] initializing",
            "  a [research] initializing",
            "    a1 [research] initializing",
            "  b [review] running"
        ]
    );

    let (ok, out, _) = cli(&app, &["flows", "ls", "--status", "running"]).await;
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "header + one flow: {out}");
    assert!(out.lines().nth(1).unwrap().starts_with("b "), "{out}");

    let (ok, out, _) = cli(&app, &["flows", "ls", "--status", "running", "--json"]).await;
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["flow_id"], "b");

    let (ok, out, _) = cli(&app, &["flows", "show", "a1"]).await;
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("parent_flow_id") && l.ends_with(" a")),
        "{out}"
    );
    let (ok, out, _) = cli(&app, &["flows", "show", "a1", "--json"]).await;
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["parent_flow_id"], "a");

    let (ok, out, _) = cli(&app, &["flows", "tree", "root", "--json"]).await;
    assert!(ok);
    let tree: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tree["flow"]["flow_id"], "root");
    assert_eq!(tree["children"][0]["children"][0]["flow"]["flow_id"], "a1");

    let (ok, _, err) = cli(&app, &["flows", "show", "ghost"]).await;
    assert!(!ok, "an unknown flow is an error");
    assert!(err.contains("flow_not_found"), "{err}");
}
