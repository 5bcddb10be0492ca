//! Backups on Redis: `SCAN` (never `KEYS`) over a pattern, keys read with their type, time to
//! live and value in two round trips per batch, and written back exactly (the same types,
//! values, stream ids and last generated ids, the remaining times to live) in one.

use ::redis::{FromRedisValue, Value};
use async_trait::async_trait;

use super::RedisHot;
use crate::hot::{BackupHot, HotError, HotResult};
use crate::model::backup::{Bytes, KeyDump, KeyValue};

/// Elements per command when a large value is written back.
const CHUNK: usize = 512;

impl RedisHot {
    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = self.keys.prefix().as_bytes().to_vec();
        full.extend_from_slice(key);
        full
    }

    fn backup_error(&self, key: &[u8], reason: impl std::fmt::Display) -> HotError {
        HotError::Corrupt {
            key: String::from_utf8_lossy(&self.full_key(key)).into_owned(),
            reason: reason.to_string(),
        }
    }
}

/// `text` with Redis glob characters escaped, so a key prefix matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A reply as `T`, or why not.
fn decode<T: FromRedisValue>(v: Value) -> Result<T, String> {
    T::from_redis_value(v).map_err(|e| e.to_string())
}

fn bytes_pairs(v: Value) -> Result<Vec<(Bytes, Bytes)>, String> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = decode(v)?;
    Ok(pairs
        .into_iter()
        .map(|(a, b)| (Bytes(a), Bytes(b)))
        .collect())
}

fn bytes_list(v: Value) -> Result<Vec<Bytes>, String> {
    let items: Vec<Vec<u8>> = decode(v)?;
    Ok(items.into_iter().map(Bytes).collect())
}

/// `last-generated-id` out of an `XINFO STREAM` reply (a map, or a flat array in RESP2).
fn last_generated_id(info: &Value) -> Option<String> {
    let pairs: Vec<(String, Value)> = decode(info.clone()).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .and_then(|(_, v)| decode::<String>(v).ok())
}

#[async_trait]
impl BackupHot for RedisHot {
    async fn scan_keys(
        &self,
        pattern: &str,
        cursor: u64,
        count: usize,
    ) -> HotResult<(u64, Vec<Vec<u8>>)> {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}{pattern}", glob_escape(self.keys.prefix())))
            .arg("COUNT")
            .arg(count);
        let (next, keys): (u64, Vec<Vec<u8>>) = self.core.read(&cmd).await?;
        let prefix = self.keys.prefix().as_bytes();
        let keys = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(prefix).map(<[u8]>::to_vec))
            .collect();
        Ok((next, keys))
    }

    async fn dump_keys(&self, keys: &[Vec<u8>]) -> HotResult<Vec<KeyDump>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut meta = ::redis::pipe();
        for key in keys {
            let full = self.full_key(key);
            meta.cmd("TYPE").arg(&full).cmd("PTTL").arg(&full);
        }
        let kinds: Vec<(String, i64)> = {
            let flat: Vec<Value> = self.core.read_pipeline(&meta, &[]).await?;
            flat.chunks(2)
                .map(|c| {
                    let kind = decode::<String>(c[0].clone()).unwrap_or_default();
                    let ttl = decode::<i64>(c[1].clone()).unwrap_or(-2);
                    (kind, ttl)
                })
                .collect()
        };
        let mut values = ::redis::pipe();
        // A key that expires or changes type between the two round trips answers an error
        // here: that key is left out, not the batch.
        values.ignore_errors();
        for (key, (kind, _)) in keys.iter().zip(&kinds) {
            let full = self.full_key(key);
            match kind.as_str() {
                "string" => values.cmd("GET").arg(&full),
                "hash" => values.cmd("HGETALL").arg(&full),
                "list" => values.cmd("LRANGE").arg(&full).arg(0).arg(-1),
                "set" => values.cmd("SMEMBERS").arg(&full),
                "zset" => values
                    .cmd("ZRANGE")
                    .arg(&full)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
                "stream" => values
                    .cmd("XRANGE")
                    .arg(&full)
                    .arg("-")
                    .arg("+")
                    .cmd("XINFO")
                    .arg("STREAM")
                    .arg(&full),
                // Gone since (`none`), or a type flowstate never writes: nothing to read.
                _ => values.cmd("ECHO").arg(""),
            };
        }
        let replies: Vec<Value> = self.core.read_pipeline(&values, &[]).await?;
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for (key, (kind, ttl)) in keys.iter().zip(kinds) {
            let next = |r: &mut std::vec::IntoIter<Value>| r.next().unwrap_or(Value::Nil);
            let reply = next(&mut replies);
            if matches!(reply, Value::ServerError(_)) {
                if kind == "stream" {
                    next(&mut replies);
                }
                continue;
            }
            let bad = |e: String| self.backup_error(key, e);
            let value = match kind.as_str() {
                "string" => match reply {
                    Value::Nil => None,
                    v => Some(KeyValue::String(Bytes(decode(v).map_err(bad)?))),
                },
                "hash" => Some(KeyValue::Hash(bytes_pairs(reply).map_err(bad)?)),
                "list" => Some(KeyValue::List(bytes_list(reply).map_err(bad)?)),
                "set" => Some(KeyValue::Set(bytes_list(reply).map_err(bad)?)),
                "zset" => {
                    // Scores as Redis writes them ("inf" included), restored as they were.
                    let pairs: Vec<(Vec<u8>, String)> = decode(reply).map_err(bad)?;
                    Some(KeyValue::Zset(
                        pairs.into_iter().map(|(m, s)| (Bytes(m), s)).collect(),
                    ))
                }
                "stream" => {
                    let info = next(&mut replies);
                    if matches!(info, Value::ServerError(_)) {
                        continue;
                    }
                    let raw: Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)> = decode(reply).map_err(bad)?;
                    let entries: Vec<(String, Vec<(Bytes, Bytes)>)> = raw
                        .into_iter()
                        .map(|(id, fields)| {
                            (
                                id,
                                fields
                                    .into_iter()
                                    .map(|(f, v)| (Bytes(f), Bytes(v)))
                                    .collect(),
                            )
                        })
                        .collect();
                    let last_id = last_generated_id(&info)
                        .or_else(|| entries.last().map(|(id, _)| id.clone()))
                        .unwrap_or_else(|| "0-0".into());
                    Some(KeyValue::Stream { entries, last_id })
                }
                _ => None,
            };
            let (Some(value), true) = (value, ttl != -2) else {
                continue;
            };
            out.push(KeyDump {
                key: Bytes(key.clone()),
                ttl_ms: (ttl >= 0).then_some(ttl),
                value,
            });
        }
        Ok(out)
    }

    async fn restore_keys(&self, dumps: &[KeyDump]) -> HotResult<()> {
        if dumps.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for dump in dumps {
            let full = self.full_key(&dump.key.0);
            pipe.cmd("DEL").arg(&full).ignore();
            match &dump.value {
                KeyValue::String(v) => {
                    pipe.cmd("SET").arg(&full).arg(&v.0).ignore();
                }
                KeyValue::Hash(pairs) => {
                    for chunk in pairs.chunks(CHUNK) {
                        let cmd = pipe.cmd("HSET").arg(&full);
                        for (f, v) in chunk {
                            cmd.arg(&f.0).arg(&v.0);
                        }
                        cmd.ignore();
                    }
                }
                KeyValue::List(items) => {
                    for chunk in items.chunks(CHUNK) {
                        let cmd = pipe.cmd("RPUSH").arg(&full);
                        for item in chunk {
                            cmd.arg(&item.0);
                        }
                        cmd.ignore();
                    }
                }
                KeyValue::Set(items) => {
                    for chunk in items.chunks(CHUNK) {
                        let cmd = pipe.cmd("SADD").arg(&full);
                        for item in chunk {
                            cmd.arg(&item.0);
                        }
                        cmd.ignore();
                    }
                }
                KeyValue::Zset(items) => {
                    for chunk in items.chunks(CHUNK) {
                        let cmd = pipe.cmd("ZADD").arg(&full);
                        for (member, score) in chunk {
                            cmd.arg(score).arg(&member.0);
                        }
                        cmd.ignore();
                    }
                }
                KeyValue::Stream { entries, last_id } => {
                    if entries.is_empty() && last_id != "0-0" {
                        // An empty stream: created at its last id and trimmed at once.
                        pipe.cmd("XADD")
                            .arg(&full)
                            .arg("MAXLEN")
                            .arg(0)
                            .arg(last_id)
                            .arg("_")
                            .arg("_")
                            .ignore();
                    }
                    for (id, fields) in entries {
                        let cmd = pipe.cmd("XADD").arg(&full).arg(id);
                        for (f, v) in fields {
                            cmd.arg(&f.0).arg(&v.0);
                        }
                        cmd.ignore();
                    }
                    if !entries.is_empty() {
                        pipe.cmd("XSETID").arg(&full).arg(last_id).ignore();
                    }
                }
            }
            if let Some(ttl) = dump.ttl_ms {
                pipe.cmd("PEXPIRE").arg(&full).arg(ttl.max(1)).ignore();
            }
        }
        let () = self.core.read_pipeline(&pipe, &[]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn prefixes_match_only_themselves() {
        assert_eq!(glob_escape("staging:"), "staging:");
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
