//! Sensitive flows: their state, phase states, agent results, snapshots and custom event
//! payloads are sealed ([`crate::security::envelope`]) before they reach either tier, and opened
//! on the way out, so neither Redis nor the ledger (nor a backup of either) holds the plaintext.
//!
//! A write must know whether its flow is sensitive before it reaches the ledger. That is fixed
//! for each registration of a flow id (its incarnation), so it is read from the ledger (never
//! from Redis, which could be forged) once and remembered per flow id with
//! the incarnation it was read for; the ledger's answer to the write names the incarnation it
//! wrote to, and when that is not the one remembered (the flow was deleted and registered
//! again meanwhile) the write is redone for the new registration. Without encryption keys no
//! flow can be registered sensitive, and writes skip all of this.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Flowstate;
use crate::error::{Error, Result};
use crate::security::Keyring;
use crate::security::envelope::envelope_text;

/// The keyring and what is known of flows' sensitivity.
pub(super) struct Sealing {
    /// Encryption keys; empty means no flow may be sensitive.
    pub(super) keyring: Keyring,
    /// flow id → (incarnation, sensitive).
    known: moka::sync::Cache<String, (i64, bool)>,
}

impl Sealing {
    pub(super) fn new(keyring: Keyring) -> Sealing {
        Sealing {
            keyring,
            known: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }
}

/// Refuses a body that looks like an envelope: it would be opened on the way out.
pub(super) fn refuse_envelope_lookalike(body: &Map<String, Value>) -> Result<()> {
    if envelope_text(body).is_some() {
        return Err(Error::InvalidInput(
            "a body whose only field is `$sealed` is reserved for encrypted values".into(),
        ));
    }
    Ok(())
}

impl Flowstate {
    /// Whether `flow_id` is sensitive, and for which incarnation (`None`: no such flow, or no
    /// keys configured, in which case nothing is sealed).
    pub(super) async fn sensitivity(&self, flow_id: &str) -> Result<Option<(i64, bool)>> {
        let sealing = &self.inner.sealing;
        if sealing.keyring.is_empty() {
            return Ok(None);
        }
        if let Some(known) = sealing.known.get(flow_id) {
            return Ok(Some(known));
        }
        // From the ledger, not the hot tier: whoever can write to Redis must not be able to
        // turn sealing off (without a secret key, cached records are not signed).
        Ok(self
            .ledger()
            .get_flow(flow_id)
            .await?
            .map(|flow| self.remember(flow_id, flow.incarnation, flow.sensitive)))
    }

    /// Forgets what is known of a deleted flow's sensitivity.
    pub(super) fn forget_sensitivity(&self, flow_id: &str) {
        self.inner.sealing.known.invalidate(flow_id);
    }

    /// Records what the ledger said of a flow's sensitivity.
    pub(super) fn remember(&self, flow_id: &str, incarnation: i64, sensitive: bool) -> (i64, bool) {
        self.inner
            .sealing
            .known
            .insert(flow_id.to_string(), (incarnation, sensitive));
        (incarnation, sensitive)
    }

    /// After a write sealed as `known` said and landed on registration `written`: the
    /// sensitivity to write again with, when the write should have been sealed and was not
    /// (the id was registered again, as a sensitive flow, between the lookup and the write).
    pub(super) async fn reseal(
        &self,
        flow_id: &str,
        known: Option<(i64, bool)>,
        written: i64,
    ) -> Result<Option<(i64, bool)>> {
        let sealed = known.is_some_and(|(_, s)| s);
        let stale = match known {
            Some((incarnation, _)) => incarnation != written,
            None => !self.inner.sealing.keyring.is_empty(),
        };
        if sealed || !stale {
            return Ok(None);
        }
        let Some(flow) = self.ledger().get_flow(flow_id).await? else {
            return Ok(None);
        };
        let relearned = self.remember(flow_id, flow.incarnation, flow.sensitive);
        Ok(relearned.1.then_some(relearned))
    }

    /// `body` sealed when `sensitive`.
    pub(super) fn seal_if(
        &self,
        sensitive: bool,
        body: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        if !sensitive {
            return Ok(body);
        }
        self.seal_value(&Value::Object(body))
    }

    /// `value` sealed (any JSON value: an event payload).
    pub(super) fn seal_value(&self, value: &Value) -> Result<Map<String, Value>> {
        self.inner
            .sealing
            .keyring
            .seal(value)
            .map_err(|e| Error::Internal(format!("sealing: {e}")))
    }

    /// `body` opened if it is an envelope; as it is otherwise.
    pub(super) fn open_body(&self, body: Map<String, Value>) -> Result<Map<String, Value>> {
        match self.open_value(Value::Object(body))? {
            Value::Object(map) => Ok(map),
            // Only objects are sealed as documents; anything else was stored by someone else.
            _ => Err(Error::Internal("sealed document is not an object".into())),
        }
    }

    /// `value` opened if it is an envelope; as it is otherwise.
    pub(crate) fn open_value(&self, value: Value) -> Result<Value> {
        let Value::Object(map) = &value else {
            return Ok(value);
        };
        match self.inner.sealing.keyring.open(map) {
            Ok(Some(opened)) => Ok(opened),
            Ok(None) => Ok(value),
            Err(e) => {
                metrics::counter!("flowstate_unopenable_envelopes_total").increment(1);
                tracing::error!(error = %e, "cannot open an encrypted value");
                Err(Error::Internal(format!("encrypted value: {e}")))
            }
        }
    }
}
