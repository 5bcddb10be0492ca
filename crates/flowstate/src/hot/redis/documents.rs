//! Documents (states, phase states, per-flow agent results) on Redis: one script per write
//! (`scripts/put_document.lua`, version-guarded, refused once the flow's incarnation ended),
//! one GET per read.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::events::APPEND_EVENT_SRC;
use super::{RedisHot, lua};
use crate::hot::{DocumentHot, HotError, HotResult, TOMBSTONE_TTL, codec};
use crate::model::events::Event;
use crate::model::{DocKind, Document, Owner};

const PUT_DOCUMENT_SRC: &str = lua!("put_document.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[PUT_DOCUMENT_SRC];
static PUT_DOCUMENT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_DOCUMENT_SRC));

#[async_trait]
impl DocumentHot for RedisHot {
    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        owner: &Owner,
        fresh: bool,
        events: &[Event],
    ) -> HotResult<()> {
        let key = self.keys.document(kind, &doc.flow_id, &doc.name);
        let payload = codec::Payload {
            saved_at: doc.saved_at,
            body: doc.body.clone(),
        };
        let value = codec::encode(&self.signer, &key, doc.version, &payload).map_err(|reason| {
            HotError::Corrupt {
                key: key.clone(),
                reason,
            }
        })?;
        let index = self
            .keys
            .document_index(kind, &doc.flow_id)
            .filter(|_| fresh);
        let invalidate = (fresh && kind == DocKind::Phase)
            .then(|| self.keys.document(DocKind::State, &doc.flow_id, ""));
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(PUT_DOCUMENT.get_hash())
            .arg(4)
            .arg(&key)
            .arg(index.as_deref().unwrap_or(&key))
            .arg(invalidate.as_deref().unwrap_or(&key))
            .arg(self.keys.flow(&doc.flow_id))
            .arg(doc.version)
            .arg(value)
            .arg(self.ttls.document(kind, &doc.name, &owner.status))
            .arg(if index.is_some() {
                doc.name.as_str()
            } else {
                ""
            })
            .arg(self.ttls.document_index(kind))
            .arg(if invalidate.is_some() { "1" } else { "0" })
            .arg(TOMBSTONE_TTL.as_secs())
            .arg(owner.incarnation)
            .ignore();
        if !fresh {
            return self.core.fill(&pipe, &[PUT_DOCUMENT_SRC]).await;
        }
        self.push_events(&mut pipe, events)?;
        let mut dirty = vec![key];
        dirty.extend(invalidate);
        self.core
            .write(&pipe, &[PUT_DOCUMENT_SRC, APPEND_EVENT_SRC], dirty)
            .await
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> HotResult<Option<Document>> {
        let key = self.keys.document(kind, flow_id, name);
        let value: Option<Vec<u8>> = self.core.read(::redis::cmd("GET").arg(&key)).await?;
        let Some(value) = value.filter(|v| !codec::is_marker(v)) else {
            return Ok(None);
        };
        let (version, payload): (i64, codec::Payload) =
            match codec::decode(&self.signer, &key, &value) {
                Ok(decoded) => decoded,
                Err(e) => return Err(self.undecodable(key, e).await),
            };
        Ok(Some(Document {
            flow_id: flow_id.to_string(),
            name: name.to_string(),
            body: payload.body,
            saved_at: payload.saved_at,
            version,
        }))
    }
}
