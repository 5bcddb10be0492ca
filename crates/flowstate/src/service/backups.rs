//! Backups of Redis data into the ledger (reference §5.3) and their restore: `SCAN` the
//! patterns (never `KEYS`), read each batch of keys with its type, value and remaining time to
//! live (streams with every entry id) and append it to the backup in the ledger, so memory
//! holds one batch (and the names of the keys seen), not the keyspace. A restore writes the
//! backup's keys back exactly, all or those matching some patterns. Scheduled every
//! `backup.interval_h`; after each backup only the newest `backup.keep` complete ones stay.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use super::{Flowstate, Inner};
use crate::error::{Error, Result};
use crate::hot::BackupHot;
use crate::model::backup::{
    BackupInfo, BackupRequest, KeyDump, RestoreReport, is_coordination, matches_any,
    validate_patterns,
};
use crate::model::{ids, now};

/// Keys read and stored per batch: small enough that a batch of large values (whole event
/// streams) still answers within `redis.command_timeout_ms`.
const BATCH: usize = 200;

/// zstd level of the stored dumps (fast; JSON of base64 compresses well even so).
const ZSTD_LEVEL: i32 = 3;

fn encode(dump: &KeyDump) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(dump).map_err(|e| Error::Internal(format!("dump: {e}")))?;
    zstd::encode_all(json.as_slice(), ZSTD_LEVEL)
        .map_err(|e| Error::Internal(format!("dump compression: {e}")))
}

fn decode(blob: &[u8]) -> Result<KeyDump> {
    let json = zstd::decode_all(blob).map_err(|e| Error::Internal(format!("dump: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| Error::Internal(format!("dump: {e}")))
}

impl Flowstate {
    fn backup_tier(&self) -> Result<&dyn BackupHot> {
        self.hot().backups().ok_or_else(|| {
            Error::Unsupported(
                "backups copy Redis data; this server's hot tier is in process (set REDIS_URL)"
                    .into(),
            )
        })
    }

    /// Backs up the keys matching the request's patterns (the configured ones by default);
    /// answers when it is complete (or failed: the backup stays, marked `failed`).
    pub async fn create_backup(&self, req: BackupRequest) -> Result<BackupInfo> {
        self.backup_tier()?;
        let patterns = req
            .patterns
            .unwrap_or_else(|| self.config().backup.patterns.clone());
        validate_patterns(&patterns)?;
        let backup_id = match req.backup_id {
            Some(id) => {
                ids::validate("backup_id", &id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let info = BackupInfo {
            backup_id: backup_id.clone(),
            patterns: patterns.clone(),
            status: "running".into(),
            keys: 0,
            bytes: 0,
            error: None,
            created_at: now(),
            finished_at: None,
        };
        self.ledger().create_backup(&info).await?;
        // To the end even if the caller hangs up: a backup is never left `running`.
        let (this, id) = (self.clone(), backup_id.clone());
        self.detached(async move {
            let copied = this.copy_keys(&id, &patterns).await;
            let error = copied.as_ref().err().map(ToString::to_string);
            this.ledger()
                .finish_backup(&id, error.as_deref(), now())
                .await?;
            match copied {
                Err(e) => tracing::warn!(backup_id = id, error = %e, "backup failed"),
                Ok(()) => {
                    let keep = this.config().backup.keep;
                    if let Err(e) = this.ledger().prune_backups(keep).await {
                        tracing::warn!(error = %e, "old backups not pruned");
                    }
                }
            }
            Ok(())
        })
        .await?;
        self.get_backup(&backup_id).await
    }

    /// Copies every key matching `patterns` into backup `backup_id`, batch by batch.
    async fn copy_keys(&self, backup_id: &str, patterns: &[String]) -> Result<()> {
        let tier = self.backup_tier()?;
        let unavailable = |e: crate::hot::HotError| Error::HotTierUnavailable(e.to_string());
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut seq = 0i64;
        for pattern in patterns {
            let mut cursor = 0;
            loop {
                let (next, keys) = tier
                    .scan_keys(pattern, cursor, BATCH)
                    .await
                    .map_err(unavailable)?;
                // A key can match two patterns, and SCAN may return a key twice; lock keys
                // are coordination, not data.
                let fresh: Vec<Vec<u8>> = keys
                    .into_iter()
                    .filter(|k| !is_coordination(k) && seen.insert(k.clone()))
                    .collect();
                for batch in fresh.chunks(BATCH) {
                    let dumps = tier.dump_keys(batch).await.map_err(unavailable)?;
                    let mut bytes = 0u64;
                    let mut entries = Vec::with_capacity(dumps.len());
                    for dump in &dumps {
                        let blob = encode(dump)?;
                        bytes += blob.len() as u64;
                        entries.push((dump.key.0.clone(), blob));
                    }
                    if !entries.is_empty() {
                        self.ledger()
                            .add_backup_entries(backup_id, seq + 1, &entries, bytes)
                            .await?;
                        seq += i64::try_from(entries.len()).unwrap_or(i64::MAX);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        metrics::counter!("flowstate_backup_keys_total").increment(seq.unsigned_abs());
        Ok(())
    }

    /// Every backup, newest first.
    pub async fn list_backups(&self) -> Result<Vec<BackupInfo>> {
        self.ledger().list_backups().await
    }

    /// One backup (its progress while it runs).
    pub async fn get_backup(&self, backup_id: &str) -> Result<BackupInfo> {
        ids::validate("backup_id", backup_id)?;
        self.ledger()
            .get_backup(backup_id)
            .await?
            .ok_or_else(|| Error::BackupNotFound(backup_id.to_string()))
    }

    /// Writes the backup's keys back (those matching `patterns`, or all), replacing what is
    /// there, with their remaining times to live as they were when backed up.
    pub async fn restore_backup(
        &self,
        backup_id: &str,
        patterns: Option<Vec<String>>,
    ) -> Result<RestoreReport> {
        self.backup_tier()?;
        if let Some(p) = &patterns {
            validate_patterns(p)?;
        }
        let backup = self.get_backup(backup_id).await?;
        // To the end even if the caller hangs up.
        let this = self.clone();
        self.detached(async move { this.write_back(backup, patterns).await })
            .await
    }

    /// Writes a complete backup's keys back, page by page.
    async fn write_back(
        &self,
        backup: BackupInfo,
        patterns: Option<Vec<String>>,
    ) -> Result<RestoreReport> {
        let tier = self.backup_tier()?;
        let backup_id = backup.backup_id.as_str();
        if backup.status != "complete" {
            return Err(Error::InvalidInput(format!(
                "backup {backup_id} is {}, not complete: nothing restored",
                backup.status
            )));
        }
        let mut after = 0i64;
        let mut keys = 0u64;
        loop {
            let page = self
                .ledger()
                .backup_entries(backup_id, after, u32::try_from(BATCH).unwrap_or(u32::MAX))
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = *last;
            let mut dumps = Vec::with_capacity(page.len());
            for (_, blob) in &page {
                let dump = decode(blob)?;
                let wanted = patterns
                    .as_ref()
                    .is_none_or(|p| matches_any(p, &dump.key.0));
                // Lock keys were never backed up; an older backup's are not restored either.
                if wanted && !is_coordination(&dump.key.0) {
                    dumps.push(dump);
                }
            }
            tier.restore_keys(&dumps)
                .await
                .map_err(|e| Error::HotTierUnavailable(e.to_string()))?;
            keys += dumps.len() as u64;
        }
        tracing::info!(backup_id, keys, "backup restored");
        Ok(RestoreReport {
            backup_id: backup_id.to_string(),
            keys,
        })
    }
}

/// How often the scheduler looks whether a backup is due (so restarts do not starve it).
const SCHEDULE_POLL: Duration = Duration::from_secs(600);

/// Scheduled backups: one whenever no complete backup of the configured patterns (by any
/// instance) is younger than `backup.interval_h`.
pub(super) async fn schedule(inner: Weak<Inner>) {
    let Some(every) = inner
        .upgrade()
        .filter(|i| i.hot.backups().is_some())
        .map(|i| Duration::from_secs(i.config.backup.interval_h * 3600))
    else {
        return;
    };
    if every.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(SCHEDULE_POLL.min(every)).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let service = Flowstate { inner: strong };
        let configured = &service.config().backup.patterns;
        let Ok(all) = service.list_backups().await else {
            continue;
        };
        let recent = all
            .iter()
            .find(|b| b.status == "complete" && &b.patterns == configured)
            .is_some_and(|b| now() - b.created_at < every);
        if recent {
            continue;
        }
        match service.create_backup(BackupRequest::default()).await {
            Ok(b) => tracing::info!(backup_id = b.backup_id, keys = b.keys, "scheduled backup"),
            Err(e) => tracing::warn!(error = %e, "scheduled backup failed"),
        }
    }
}
