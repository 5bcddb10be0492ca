//! Lock waiting in process. The embedded tier grants no locks itself: the ledger's leases do
//! (so that processes sharing one SQLite file exclude each other); a release here wakes this
//! process's waiters at once, and waiters in another process find out by their bounded poll.

use async_trait::async_trait;

use super::MemoryHot;
use crate::hot::LockWaitHot;
use crate::hot::fanout::LockWatch;

#[async_trait]
impl LockWaitHot for MemoryHot {
    async fn watch_lock(&self, name: &str) -> LockWatch {
        self.lock_hub.watch(name).0
    }

    fn wake_lock(&self, name: &str) {
        self.lock_hub.wake(name);
    }
}
