//! Effective key lifetimes: the configured base, scaled by `ttl.multiplier`, plus a random
//! jitter of up to `ttl.jitter` of it so that keys written together do not expire together.

use rand::Rng;

use crate::config::TtlConfig;
use crate::model::DocKind;

/// Computes effective TTLs from the configuration.
#[derive(Debug, Clone)]
pub struct Ttls {
    cfg: TtlConfig,
}

impl Ttls {
    /// Wraps the TTL section of the configuration.
    pub fn new(cfg: TtlConfig) -> Self {
        Ttls { cfg }
    }

    /// The raw configuration.
    pub fn config(&self) -> &TtlConfig {
        &self.cfg
    }

    /// Scales `base_secs` and adds jitter; never below one second.
    pub fn effective(&self, base_secs: u64) -> u64 {
        let scaled = (base_secs as f64 * self.cfg.multiplier).round().max(1.0);
        let max_jitter = (scaled * self.cfg.jitter).floor() as u64;
        let jitter = if max_jitter == 0 {
            0
        } else {
            rand::rng().random_range(0..=max_jitter)
        };
        scaled as u64 + jitter
    }

    /// The range [`Ttls::effective`] draws from, for checks and tests.
    pub fn bounds(&self, base_secs: u64) -> (u64, u64) {
        let scaled = (base_secs as f64 * self.cfg.multiplier).round().max(1.0);
        let max_jitter = (scaled * self.cfg.jitter).floor() as u64;
        (scaled as u64, scaled as u64 + max_jitter)
    }

    /// `orchestrator:flow:{id}`.
    pub fn flow(&self) -> u64 {
        self.effective(self.cfg.flow)
    }

    /// `orchestrator:hierarchy:{parent}`.
    pub fn hierarchy(&self) -> u64 {
        self.effective(self.cfg.hierarchy)
    }

    /// `flow:transitions:{id}`.
    pub fn transitions(&self) -> u64 {
        self.effective(self.cfg.transitions)
    }

    /// `flow:snapshots:{id}:*`.
    pub fn snapshots(&self) -> u64 {
        self.effective(self.cfg.snapshots)
    }

    /// `flow:events:{id}`.
    pub fn events(&self) -> u64 {
        self.effective(self.cfg.events)
    }

    /// A document of `kind` named `name` on a flow in `flow_status`: the state by status, a
    /// phase by its name, agent results by whether the agent is an analyzer.
    pub fn document(&self, kind: DocKind, name: &str, flow_status: &str) -> u64 {
        let c = &self.cfg;
        let base = match kind {
            DocKind::State => match flow_status {
                "completed" => c.flow_state.completed,
                "failed" => c.flow_state.failed,
                _ => c.flow_state.active,
            },
            DocKind::Phase => c
                .phases
                .get(name)
                .or_else(|| c.phases.get("default"))
                .copied()
                .unwrap_or(3600),
            DocKind::Agent if name.contains("analyzer") => c.agent_results_analyzer,
            DocKind::Agent => c.agent_results_default,
        };
        self.effective(base)
    }

    /// `agent:results:<agent>:*`: the agent's own TTL, else the `default` one (1800 s).
    pub fn agent_cache(&self, agent: &str) -> u64 {
        let c = &self.cfg.agent_cache;
        self.effective(
            c.get(agent)
                .or_else(|| c.get("default"))
                .copied()
                .unwrap_or(1800),
        )
    }

    /// `metrics:*` hashes.
    pub fn metrics(&self) -> u64 {
        self.effective(self.cfg.metrics)
    }

    /// The set listing a flow's documents of `kind` (phases, agents).
    pub fn document_index(&self, kind: DocKind) -> u64 {
        match kind {
            DocKind::Agent => self.effective(self.cfg.agent_set),
            DocKind::State | DocKind::Phase => self.effective(self.cfg.phase_set),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_and_jitter_stay_in_bounds() {
        let ttls = Ttls::new(TtlConfig {
            multiplier: 0.8,
            jitter: 0.05,
            ..TtlConfig::default()
        });
        assert_eq!(ttls.bounds(3600), (2880, 3024));
        let seen: std::collections::HashSet<u64> = (0..200).map(|_| ttls.flow()).collect();
        assert!(seen.iter().all(|t| (2880..=3024).contains(t)));
        assert!(seen.len() > 1, "jitter spreads expiries");
    }

    #[test]
    fn document_ttls_follow_the_reference() {
        let ttls = Ttls::new(TtlConfig {
            jitter: 0.0,
            ..TtlConfig::default()
        });
        assert_eq!(ttls.document(DocKind::State, "", "running"), 300);
        assert_eq!(ttls.document(DocKind::State, "", "completed"), 3600);
        assert_eq!(ttls.document(DocKind::State, "", "failed"), 1800);
        assert_eq!(
            ttls.document(DocKind::Phase, "technology_analysis", "x"),
            7200
        );
        assert_eq!(ttls.document(DocKind::Phase, "synthesis", "x"), 1800);
        assert_eq!(ttls.document(DocKind::Phase, "anything_else", "x"), 3600);
        assert_eq!(
            ttls.document(DocKind::Agent, "codebase_analyzer", "x"),
            3600
        );
        assert_eq!(ttls.document(DocKind::Agent, "planner", "x"), 1800);
    }

    #[test]
    fn no_jitter_is_exact() {
        let ttls = Ttls::new(TtlConfig {
            jitter: 0.0,
            ..TtlConfig::default()
        });
        assert_eq!(ttls.flow(), 3600);
        assert_eq!(ttls.effective(1), 1);
    }
}
