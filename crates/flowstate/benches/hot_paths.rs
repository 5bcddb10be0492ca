//! Micro-benchmarks of the hot paths, in process and on one client: the value codec every
//! Redis value goes through, and the embedded service's cached read and durable write.
//! `cargo bench -p flowstate`; the HTTP and concurrency figures come from `flowstate bench`.

// A failed unwrap is a broken benchmark setup, which should stop the run.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use flowstate::hot::codec;
use flowstate::security::Signer;
use flowstate::{Config, Flowstate, NewFlow, TransitionRequest};
use serde_json::{Value, json};

/// A ~1 KB phase state like the reference bench's.
fn phase_state() -> Value {
    let finding = "flow agent state cache redis event phase discovery analysis plan result";
    json!({"phase": "analysis", "progress": 0.5,
        "findings": (0..8).map(|k| json!({"id": format!("f-{k}"), "text": finding, "confidence": 0.8})).collect::<Vec<_>>(),
        "updated_at": "2025-01-01T00:00:00+00:00"})
}

fn codec_paths(c: &mut Criterion) {
    let state = phase_state();
    let plain = Signer::default();
    let signed = Signer::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
    for (name, signer) in [("", &plain), (", signed", &signed)] {
        let key = "flow:state:{bench}";
        let encoded = codec::encode(signer, key, 7, &state).unwrap();
        c.bench_function(&format!("codec/encode 1 KB state (zstd{name})"), |b| {
            b.iter(|| codec::encode(signer, key, 7, black_box(&state)).unwrap())
        });
        c.bench_function(&format!("codec/decode 1 KB state (zstd{name})"), |b| {
            b.iter(|| codec::decode::<Value>(signer, key, black_box(&encoded)).unwrap())
        });
    }
}

fn embedded_paths(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let service = rt.block_on(Flowstate::open(config)).unwrap();
    rt.block_on(service.register_flow(NewFlow {
        flow_id: Some("bench".into()),
        flow_type: "research".into(),
        parent_flow_id: None,
        metadata: None,
        sensitive: false,
    }))
    .unwrap();

    c.bench_function("embedded/get_flow (memory tier hit)", |b| {
        b.to_async(&rt)
            .iter(|| async { service.get_flow("bench").await.unwrap() })
    });

    // Each iteration commits a transition to SQLite, alternating running <-> waiting.
    let to_running = |from: &str| TransitionRequest {
        from: from.into(),
        to: "running".into(),
        metadata: None,
    };
    rt.block_on(service.transition("bench", to_running("initializing")))
        .unwrap();
    let running = AtomicBool::new(true);
    c.bench_function("embedded/transition (ledger commit + hot tier)", |b| {
        b.to_async(&rt).iter(|| {
            let (from, to) = if running.fetch_xor(true, Ordering::Relaxed) {
                ("running", "waiting")
            } else {
                ("waiting", "running")
            };
            let req = TransitionRequest {
                from: from.into(),
                to: to.into(),
                metadata: None,
            };
            let service = &service;
            async move { service.transition("bench", req).await.unwrap() }
        })
    });
}

criterion_group!(benches, codec_paths, embedded_paths);
criterion_main!(benches);
