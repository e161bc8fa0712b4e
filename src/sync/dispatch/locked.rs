//! Locking the dispatcher's in-memory maps.

use std::sync::{Mutex as StdMutex, MutexGuard, PoisonError};

/// Locks one of the dispatcher's in-memory maps. They hold caches and counters that every
/// step leaves consistent, so a panic elsewhere while one was held does not make it unusable.
pub(super) trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for StdMutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
