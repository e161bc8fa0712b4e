//! The admin listener's connection slots: up to the cap with keep-alive, then a small overflow
//! of one request each, so the probes are answered while idle connections hold the cap.
//!
//! When the overflow is full too, the oldest overflow connection that has not yet sent a
//! request gives up its slot to the newcomer. A probe sends its request as soon as it has
//! connected, so it is served; a client that only opens connections keeps pushing out its
//! own. Only when every overflow connection is in a request is a newcomer closed at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{AdminSettings, DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS};

/// Connections served beyond the cap, one request each.
pub const OVERFLOW: usize = 16;
/// The header timeout of an overflow connection: a probe sends its request at once.
pub const OVERFLOW_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

const WAITING: u8 = 0;
const IN_REQUEST: u8 = 1;
const GIVEN_UP: u8 = 2;

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: u32,
}

impl From<&AdminSettings> for Limits {
    fn from(settings: &AdminSettings) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(settings.admin_header_read_timeout_secs),
            max_connections: settings.admin_max_connections,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A connection's slot, held until the connection ends.
pub(super) struct Slot {
    pub header_read_timeout: Duration,
    pub keep_alive: bool,
    overflow: Option<Arc<Overflowing>>,
    _regular: Option<OwnedSemaphorePermit>,
    _open: mpsc::Sender<()>,
}

struct Overflowing {
    state: AtomicU8,
    give_up: CancellationToken,
}

impl Slot {
    /// From here on the slot is not given up: the request is answered.
    pub fn in_request(&self) {
        if let Some(o) = &self.overflow {
            let _ =
                o.state
                    .compare_exchange(WAITING, IN_REQUEST, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Resolves once the slot is given up to a newer connection; never for one under the cap.
    pub async fn given_up(&self) {
        match &self.overflow {
            Some(o) => o.give_up.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

pub(super) struct Slots {
    limits: Limits,
    regular: Arc<Semaphore>,
    overflow: Mutex<VecDeque<Weak<Overflowing>>>,
    /// Whether the cap was full at the last accept, so it is logged once per episode.
    full: AtomicBool,
    open: mpsc::Sender<()>,
    closed: mpsc::Receiver<()>,
}

impl Slots {
    pub fn new(limits: Limits) -> Self {
        let (open, closed) = mpsc::channel(1);
        Self {
            limits,
            regular: Arc::new(Semaphore::new(limits.max_connections as usize)),
            overflow: Mutex::new(VecDeque::with_capacity(OVERFLOW)),
            full: false.into(),
            open,
            closed,
        }
    }

    /// A slot for a new connection; `None` when every overflow connection is in a request.
    pub fn admit(&self) -> Option<Slot> {
        if let Ok(permit) = self.regular.clone().try_acquire_owned() {
            self.full.store(false, Ordering::Relaxed);
            return Some(Slot {
                header_read_timeout: self.limits.header_read_timeout,
                keep_alive: true,
                overflow: None,
                _regular: Some(permit),
                _open: self.open.clone(),
            });
        }
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                overflow = OVERFLOW,
                "the admin listener is at its connection cap (ADMIN_MAX_CONNECTIONS); \
                 serving new connections one request each"
            );
        }
        let overflowing = Arc::new(Overflowing {
            state: AtomicU8::new(WAITING),
            give_up: CancellationToken::new(),
        });
        {
            let mut queue = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
            queue.retain(|o| o.strong_count() > 0);
            if queue.len() >= OVERFLOW {
                let oldest_waiting = queue.iter().position(|o| {
                    o.upgrade().is_some_and(|o| {
                        let given_up = o
                            .state
                            .compare_exchange(WAITING, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok();
                        if given_up {
                            o.give_up.cancel();
                        }
                        given_up
                    })
                })?;
                queue.remove(oldest_waiting);
            }
            queue.push_back(Arc::downgrade(&overflowing));
        }
        Some(Slot {
            header_read_timeout: self
                .limits
                .header_read_timeout
                .min(OVERFLOW_HEADER_READ_TIMEOUT),
            keep_alive: false,
            overflow: Some(overflowing),
            _regular: None,
            _open: self.open.clone(),
        })
    }

    /// Waits until every connection has ended and given back its slot.
    pub async fn drained(self) {
        let Self {
            open, mut closed, ..
        } = self;
        drop(open);
        // Every sender is gone once every slot is.
        let _ = closed.recv().await;
    }
}
