//! `rediss://`: TLS to Redis, with the server's certificate verified. A Redis whose certificate
//! comes from a CA nobody trusts is not used (the ledger serves); trusting that CA through
//! `redis.ca_cert` makes it the hot tier.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, RedisServer, spawn_app_with};

/// A private CA and a certificate it issued for 127.0.0.1, as PEM files in `dir`:
/// (CA certificate, server certificate, server key).
fn private_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flowstate test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("server.pem", server.pem()),
        write("server.key", server_key.serialize_pem()),
    )
}

#[tokio::test]
async fn rediss_verifies_the_certificate_and_trusts_only_the_ca_given() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let redis = RedisServer::start_tls(&cert, &key).await;
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);

    // Public roots only: the certificate is refused, so Redis is never used.
    let untrusted = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url.clone());
        c.redis.ssl_required = true;
        c.redis.connect_timeout_ms = 500;
    })
    .await;
    untrusted
        .register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let health = untrusted.get("/v1/health").await;
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    let read = untrusted.get("/v1/flows/f").await;
    assert_eq!(read.status, StatusCode::OK, "the ledger serves");

    // The private CA trusted: Redis is the hot tier, over TLS.
    let trusted = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url.clone());
        c.redis.ssl_required = true;
        c.redis.ca_cert = Some(ca.clone());
    })
    .await;
    trusted
        .register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let health = trusted.get("/v1/health").await;
    assert_eq!(health.body["status"], "healthy", "{}", health.body);
    let read = trusted.get("/v1/flows/f").await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(
        !read.headers.contains_key("flowstate-degraded"),
        "served with Redis"
    );
    assert!(
        health.body["redis"]["stats"]["round_trips"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_startup_error_naming_the_setting() {
    let mut config = flowstate::Config::default();
    config.redis.url = Some("rediss://127.0.0.1:1/0".into());
    config.redis.ca_cert = Some("/nonexistent/ca.pem".into());
    let err = flowstate::Flowstate::open(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("redis.ca_cert"), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}
