//! The Redis key layout (docs/redis-keys.md): the reference's patterns, with the flow id inside literal
//! braces so that all keys of one flow share a Redis Cluster hash slot, behind an optional
//! namespace prefix.

use crate::model::DocKind;

/// Builds every key flowstate writes to Redis.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (may be empty).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `orchestrator:flow:{<flow_id>}`: the flow record (hash).
    pub fn flow(&self, flow_id: &str) -> String {
        format!("{}orchestrator:flow:{{{flow_id}}}", self.prefix)
    }

    /// `orchestrator:flows`: the registry of flow ids (set).
    pub fn registry(&self) -> String {
        format!("{}orchestrator:flows", self.prefix)
    }

    /// `orchestrator:hierarchy:{<parent_id>}`: direct children of a flow (set).
    pub fn hierarchy(&self, parent_id: &str) -> String {
        format!("{}orchestrator:hierarchy:{{{parent_id}}}", self.prefix)
    }

    /// Where a document lives: `cache:flow:state:{<flow_id>}`,
    /// `discovery:phase:{<flow_id>}:<phase>` or `discovery:agents:{<flow_id>}:<agent>`.
    pub fn document(&self, kind: DocKind, flow_id: &str, name: &str) -> String {
        match kind {
            DocKind::State => format!("{}cache:flow:state:{{{flow_id}}}", self.prefix),
            DocKind::Phase => format!("{}discovery:phase:{{{flow_id}}}:{name}", self.prefix),
            DocKind::Agent => format!("{}discovery:agents:{{{flow_id}}}:{name}", self.prefix),
        }
    }

    /// The set listing a flow's phases (`discovery:state:{<flow_id>}:phases`) or agents
    /// (`discovery:state:{<flow_id>}:cached_agents`); the state has none.
    pub fn document_index(&self, kind: DocKind, flow_id: &str) -> Option<String> {
        match kind {
            DocKind::State => None,
            DocKind::Phase => Some(format!(
                "{}discovery:state:{{{flow_id}}}:phases",
                self.prefix
            )),
            DocKind::Agent => Some(format!(
                "{}discovery:state:{{{flow_id}}}:cached_agents",
                self.prefix
            )),
        }
    }

    /// `flow:snapshots:{<flow_id>}:<snapshot_id>`: one snapshot.
    pub fn snapshot(&self, flow_id: &str, snapshot_id: &str) -> String {
        format!("{}flow:snapshots:{{{flow_id}}}:{snapshot_id}", self.prefix)
    }

    /// `flow:snapshots:{<flow_id>}:list`: a flow's snapshot ids, newest first.
    pub fn snapshot_list(&self, flow_id: &str) -> String {
        format!("{}flow:snapshots:{{{flow_id}}}:list", self.prefix)
    }

    /// `agent:results:<agent>:<hash>`: one cached agent result (string).
    pub fn agent_result(&self, agent: &str, hash: &str) -> String {
        format!("{}agent:results:{agent}:{hash}", self.prefix)
    }

    /// `agent:lease:{<result key>}`: who computes a missing result (string: the token). Its
    /// hash tag is the result's key, so both live in one Redis Cluster slot.
    pub fn agent_lease(&self, agent: &str, hash: &str) -> String {
        format!(
            "{}agent:lease:{{{}}}",
            self.prefix,
            self.agent_result(agent, hash)
        )
    }

    /// A SCAN pattern over the agent's results whose hash matches the glob `hash_glob`; the
    /// prefix and agent are escaped, so only `hash_glob` is a pattern.
    pub fn agent_results_glob(&self, agent: &str, hash_glob: &str) -> String {
        let literal = self.agent_result(agent, "");
        let mut escaped = String::with_capacity(literal.len() + hash_glob.len());
        for c in literal.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push_str(hash_glob);
        escaped
    }

    /// `metrics:agent_cache:<agent>`: hit, miss, set and error counts of all instances (hash).
    pub fn agent_cache_metrics(&self, agent: &str) -> String {
        format!("{}metrics:agent_cache:{agent}", self.prefix)
    }

    /// `agent:meta:<agent>`: `total_cached` and `last_cached` (hash).
    pub fn agent_meta(&self, agent: &str) -> String {
        format!("{}agent:meta:{agent}", self.prefix)
    }

    /// `flow:events:{<flow_id>}`: the flow's event stream.
    pub fn events(&self, flow_id: &str) -> String {
        format!("{}flow:events:{{{flow_id}}}", self.prefix)
    }

    /// `flow:events:{<flow_id>}:meta`: the event stream's epoch (hash: `epoch`, `live`).
    pub fn events_meta(&self, flow_id: &str) -> String {
        format!("{}flow:events:{{{flow_id}}}:meta", self.prefix)
    }

    /// The flow id of an events key ([`Keys::events`]), which is also the name of the Redis
    /// channel its live events are published on.
    pub fn events_flow<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("flow:events:{")?
            .strip_suffix('}')
    }

    /// `sse:connections:<connection_id>`: one open SSE connection (string: JSON).
    pub fn sse_connection(&self, connection_id: &str) -> String {
        format!("{}sse:connections:{connection_id}", self.prefix)
    }

    /// `sse:connections:flow:{<flow_id>}`: a flow's open SSE connections (sorted set: id by
    /// expiry in ms, so the entries of a crashed instance lapse).
    pub fn sse_flow_connections(&self, flow_id: &str) -> String {
        format!("{}sse:connections:flow:{{{flow_id}}}", self.prefix)
    }

    /// `orchestrator:locks:{<name>}`: a held lock (string: its owner token), expiring with
    /// the lock; also the channel its release is published on.
    pub fn lock(&self, name: &str) -> String {
        format!("{}orchestrator:locks:{{{name}}}", self.prefix)
    }

    /// `orchestrator:locks:grantor`: a random nonce written when locks are first granted by
    /// this Redis's data. With the process `run_id` it names the grantor, so a Redis that lost
    /// its keys without restarting (FLUSHALL, eviction of the key) is a different grantor.
    pub fn lock_grantor(&self) -> String {
        format!("{}orchestrator:locks:grantor", self.prefix)
    }

    /// `orchestrator:locks:{<name>}:fence`: the last fencing token granted for the name.
    pub fn lock_fence(&self, name: &str) -> String {
        format!("{}orchestrator:locks:{{{name}}}:fence", self.prefix)
    }

    /// `metrics:redis:<metric>`: the health monitor's samples of a metric (sorted set scored
    /// by Unix seconds, members `<seconds>:<value>`), trimmed to 24 hours.
    pub fn metric_series(&self, metric: &str) -> String {
        format!("{}metrics:redis:{metric}", self.prefix)
    }

    /// `metrics:redis:budget:<day>`: the commands and bytes every instance sent to Redis on a
    /// UTC day (hash: `commands`, `bytes`), kept two days.
    pub fn budget(&self, day: &str) -> String {
        format!("{}metrics:redis:budget:{day}", self.prefix)
    }

    /// `metrics:redis:leader`: the instance whose health monitor writes the series and posts
    /// alerts (string, its instance id, expiring after two check intervals).
    pub fn monitor_leader(&self) -> String {
        format!("{}metrics:redis:leader", self.prefix)
    }

    /// The lock name of a lock key ([`Keys::lock`]), i.e. of its release channel.
    pub fn lock_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("orchestrator:locks:{")?
            .strip_suffix('}')
    }

    /// `flow:transitions:{<flow_id>}`: the transitions stream.
    pub fn transitions(&self, flow_id: &str) -> String {
        format!("{}flow:transitions:{{{flow_id}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part Redis Cluster hashes: the first `{…}` with something inside.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("key has a hash tag");
        let close = key[open..].find('}').expect("tag closes") + open;
        &key[open + 1..close]
    }

    #[test]
    fn per_flow_keys_share_a_hash_tag() {
        let keys = Keys::new("env1:");
        assert_eq!(keys.flow("f1"), "env1:orchestrator:flow:{f1}");
        assert_eq!(keys.transitions("f1"), "env1:flow:transitions:{f1}");
        assert_eq!(
            hash_tag(&keys.flow("f1")),
            hash_tag(&keys.transitions("f1"))
        );
        assert_eq!(keys.hierarchy("p"), "env1:orchestrator:hierarchy:{p}");
        assert_eq!(keys.registry(), "env1:orchestrator:flows");
        assert_eq!(keys.events_flow(&keys.events("a{b}")), Some("a{b}"));
        assert_eq!(keys.events_flow("env1:flow:transitions:{f}"), None);
        assert_eq!(keys.lock_name(&keys.lock("l1")), Some("l1"));
        assert_eq!(keys.lock_name(&keys.events("l1")), None);
        assert_eq!(hash_tag(&keys.lock("l1")), hash_tag(&keys.lock_fence("l1")));
        assert_eq!(
            hash_tag(&keys.events("f1")),
            hash_tag(&keys.events_meta("f1"))
        );
    }
}
