//! Effective key lifetimes: the configured base, scaled by `ttl.multiplier`, plus a random
//! jitter of up to `ttl.jitter` of it so that keys written together do not expire together.

use rand::Rng;

use crate::config::TtlConfig;

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
    fn no_jitter_is_exact() {
        let ttls = Ttls::new(TtlConfig {
            jitter: 0.0,
            ..TtlConfig::default()
        });
        assert_eq!(ttls.flow(), 3600);
        assert_eq!(ttls.effective(1), 1);
    }
}
