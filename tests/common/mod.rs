//! Test harness: a fresh PostgreSQL database and a private RabbitMQ topology per test, the
//! worker running against them, and ways to publish and to wait without sleeping.
#![allow(dead_code)]

pub mod altinn;
pub mod dev;
pub mod logs;
pub mod proxy;
pub mod steps;
pub mod workload;

use std::collections::BTreeSet;
use std::time::Duration;

use altinn_sync::admin::{self, AdminSettings};
use altinn_sync::altinn::AltinnSettings;
use altinn_sync::ingest::{self, BrokerSettings, IngestSettings, Topology};
use altinn_sync::policy::RoleMapping;
use altinn_sync::publish::json_properties;
use altinn_sync::state::{self, DbSettings};
use altinn_sync::sync::FlushSettings;
use altinn_sync::worker::{self, Housekeeping, WorkerSettings};
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use workload::{FirmEvents, Grant, Person};

pub const WAIT: Duration = Duration::from_secs(60);

pub fn pg_root() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub struct TestApp {
    pub settings: WorkerSettings,
    pub pool: PgPool,
    pub topology: Topology,
    conn: Connection,
    publisher: Channel,
    worker: Option<(CancellationToken, JoinHandle<Result<(), worker::Error>>)>,
    /// Where the running worker's admin listener is bound.
    pub admin: Option<std::net::SocketAddr>,
    /// A firm of its own, used only for barrier events.
    barrier: FirmEvents,
    barrier_person: Person,
    /// Set by `teardown`; otherwise dropping the app removes what the test made.
    torn_down: bool,
}

impl TestApp {
    /// A fresh database and topology, with the worker running.
    pub async fn spawn() -> Self {
        let mut app = Self::without_worker().await;
        app.start_worker().await;
        app
    }

    /// A fresh, migrated database and a declared topology, with no worker yet.
    pub async fn without_worker() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let settings = WorkerSettings {
            db: DbSettings {
                database_url: format!("{}/t_{id}", pg_root()),
                database_max_connections: 4,
            },
            broker: BrokerSettings {
                amqp_url: amqp_url(),
            },
            ingest: IngestSettings {
                topology_prefix: format!("t-{id}"),
                events_exchange: format!("t-{id}.adminflow.events"),
                delivery_limit: 20,
                prefetch: 200,
                batch_size: 50,
                parallelism: 2,
                batch_linger_ms: 5,
                allow_synthetic_nin: false,
                sequence_regression_threshold: 1000,
                db_outage_hold_secs: 300,
                retry_max_interval_secs: 1,
            },
            housekeeping: Housekeeping {
                role_mapping: RoleMapping::default(),
                retention_days: 30,
                audit_retention_days: 400,
                progress_interval_secs: 60,
                shutdown_grace_secs: 25,
            },
            altinn: AltinnSettings::default(),
            flush: FlushSettings {
                flush_retry_initial_ms: 20,
                flush_retry_max_secs: 1,
                flush_concurrency: Some(8),
                flush_concurrency_min: 16,
                flush_concurrency_max: 256,
                flush_lease_secs: 120,
                remove_idle_agents: false,
                flush_concurrency_per_firm: 4,
                make_before_break_max_secs: 900,
                revokes_enabled: true,
                revoke_guard_min: 10,
                revoke_guard_share: 0.2,
                // The guard's mechanism on one person's revokes; its defaults in `guard.rs`.
                revoke_guard_spread: 1,
                auto_sync_after_secs: None,
            },
            admin: AdminSettings {
                admin_listen: ([127, 0, 0, 1], 0).into(),
                admin_tokens_file: None,
                admin_header_read_timeout_secs: admin::DEFAULT_HEADER_READ_TIMEOUT_SECS,
                admin_max_connections: admin::DEFAULT_MAX_CONNECTIONS,
                api: admin::ApiSettings::default(),
            },
        };
        let pool = state::connect(&settings.db).await.expect("test database");
        state::migrate(&pool).await.expect("migrations");
        let topology = settings.ingest.topology();
        let conn = ingest::connect(&settings.broker.amqp_url)
            .await
            .expect("RabbitMQ");
        let declare = conn.create_channel().await.unwrap();
        topology.declare(&declare).await.expect("topology");
        let publisher = conn.create_channel().await.unwrap();
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            settings,
            pool,
            topology,
            conn,
            publisher,
            worker: None,
            admin: None,
            barrier: FirmEvents::new(workload::org_number(1_999_999)),
            barrier_person: Person::new(424_242),
            torn_down: false,
        }
    }

    pub async fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "the worker is already running");
        let token = CancellationToken::new();
        let settings = self.settings.clone();
        let shutdown = token.clone();
        let server = admin::Server::bind_with(&settings.admin)
            .await
            .expect("the admin listener binds");
        self.admin = Some(server.local_addr());
        let handle =
            tokio::spawn(async move { worker::run_bound(&settings, server, shutdown).await });
        self.worker = Some((token, handle));
    }

    /// Waits for the worker to stop by itself, and says how it ended.
    pub async fn worker_ended(&mut self) -> Result<(), worker::Error> {
        let (_token, handle) = self.worker.take().expect("the worker is running");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the worker stops by itself")
            .expect("the worker task did not panic")
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop_worker(&mut self) {
        let (token, handle) = self.worker.take().expect("the worker is running");
        token.cancel();
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the worker stops in time")
            .expect("the worker task did not panic")
            .expect("the worker stops without error");
    }

    pub async fn publish_event(&self, event: &Value) {
        let key = event["event_type"].as_str().expect("event_type").to_owned();
        self.publish_as(&key, event).await;
    }

    /// Publishes `event` with an explicit routing key.
    pub async fn publish_as(&self, routing_key: &str, event: &Value) {
        let id = event["event_id"].as_str().map(str::to_owned);
        let body = serde_json::to_vec(event).unwrap();
        let exchange = self.topology.events_exchange.clone();
        self.publish_raw(&exchange, routing_key, &body, id).await;
    }

    pub async fn publish_command(&self, command: &Value) {
        let key = command["command_type"].as_str().unwrap().to_owned();
        let id = command["command_id"].as_str().map(str::to_owned);
        let body = serde_json::to_vec(command).unwrap();
        let exchange = self.topology.commands_exchange.clone();
        self.publish_raw(&exchange, &key, &body, id).await;
    }

    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        id: Option<String>,
    ) {
        let props = json_properties(id.as_deref());
        let confirm = self.publish_with(exchange, routing_key, body, props).await;
        assert_eq!(
            confirm,
            Confirmation::Ack(None),
            "the broker routed and confirmed the message"
        );
    }

    /// Publishes `body` with whatever AMQP properties the test chooses (content type and
    /// encoding, headers such as `traceparent`, message id), as `mandatory`, and returns the
    /// broker's confirm: `Ack(None)` when routed, `Ack(Some(returned))` when no queue is bound
    /// for `routing_key`.
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Confirmation {
        self.publisher
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap()
    }

    /// Whether the worker task is still running (it has neither returned nor panicked).
    pub fn worker_is_running(&self) -> bool {
        self.worker.as_ref().is_some_and(|(_, h)| !h.is_finished())
    }

    /// How many messages `queue` holds that no consumer has taken (a passive declare).
    pub async fn messages_in(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = ch.close(200, "counted".into()).await;
        q.message_count()
    }

    /// Publishes many events, waiting for all confirms at the end.
    pub async fn publish_all(&self, events: &[(String, Value)]) {
        let exchange = self.topology.events_exchange.clone();
        for chunk in events.chunks(1000) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for (key, event) in chunk {
                let props = json_properties(event["event_id"].as_str());
                let body = serde_json::to_vec(event).unwrap();
                confirms.push(
                    self.publisher
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            props,
                        )
                        .await
                        .unwrap(),
                );
            }
            for c in confirms {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }

    /// Waits until `cond` holds, waking on every committed batch (the worker notifies
    /// `altinn_sync_ingested` on commit) instead of sleeping.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut listener = PgListener::connect_with(&self.pool).await.unwrap();
        listener
            .listen_all(["altinn_sync_ingested", "altinn_sync_flushed"])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond().await {
            match tokio::time::timeout_at(deadline, listener.recv()).await {
                Ok(r) => {
                    r.unwrap();
                }
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until everything published to the events queue so far is committed.
    ///
    /// The queue is FIFO with one consumer, and a batch is taken only after the previous one
    /// has committed in full. A batch commits in firm shards, in parallel, so one marker's
    /// commit proves only its own shard; a second marker, published after the first committed,
    /// lands in a later batch and so proves that every earlier batch has committed entirely.
    pub async fn barrier(&mut self) {
        for _ in 0..2 {
            self.marker().await;
        }
    }

    async fn marker(&mut self) {
        let marker = self.barrier.role_changed(&self.barrier_person, &[]);
        self.publish_event(&marker).await;
        let id = Uuid::parse_str(marker["event_id"].as_str().unwrap()).unwrap();
        let pool = self.pool.clone();
        self.wait_until("the barrier event", || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        })
        .await;
    }

    /// Marker events a test's `barrier` calls have added to `processed_events`.
    pub async fn markers(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE firm = $1")
            .bind(&self.barrier.org)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Every desired grant, as the table holds it.
    pub async fn desired_all(&self) -> BTreeSet<Grant> {
        let rows: Vec<Grant> = sqlx::query_as(
            "SELECT firm, employee_id, client_org_number, package FROM desired_grants",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    /// A firm's desired grants as `altinn-sync desired --json` computes them.
    pub async fn desired(&self, firm: &str) -> Vec<(Uuid, String, String)> {
        state::desired_grants(&self.pool, firm)
            .await
            .unwrap()
            .into_iter()
            .map(|g| (g.employee_id, g.client_org_number, g.package))
            .collect()
    }

    /// The incrementally maintained table equals a recomputation from scratch.
    pub async fn assert_desired_consistent(&self) {
        let missing = self
            .count("SELECT count(*) FROM (SELECT * FROM desired_grants_expected EXCEPT SELECT firm, employee_id, client_org_number, package FROM desired_grants) x")
            .await;
        let extra = self
            .count("SELECT count(*) FROM (SELECT firm, employee_id, client_org_number, package FROM desired_grants EXCEPT SELECT * FROM desired_grants_expected) x")
            .await;
        assert_eq!(
            (missing, extra),
            (0, 0),
            "desired_grants drifted from the facts"
        );
    }

    /// Waits for `expected` messages on the test's dead-letter queue and takes them:
    /// (reason code, routing key, body). The worker republishes a poison message after its
    /// batch commits, so this consumes rather than reading once.
    pub async fn drain_dead_letters(&self, expected: usize) -> Vec<(String, String, Vec<u8>)> {
        self.drain_dead_letter_deliveries(expected)
            .await
            .into_iter()
            .map(|delivery| {
                let headers = delivery.properties.headers().clone().unwrap_or_default();
                let code = headers
                    .inner()
                    .get("x-altinn-sync-reason-code")
                    .and_then(|v| v.as_long_string())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                assert!(
                    headers.inner().contains_key("x-altinn-sync-reason"),
                    "a dead letter carries its reason"
                );
                (code, delivery.routing_key.to_string(), delivery.data)
            })
            .collect()
    }

    /// Waits for `expected` messages on the test's dead-letter queue and takes them whole,
    /// properties and headers included.
    pub async fn drain_dead_letter_deliveries(&self, expected: usize) -> Vec<Delivery> {
        use futures_util::StreamExt;
        let ch = self.conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                self.topology.dead_letter_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.len() < expected {
            let delivery = tokio::time::timeout(WAIT, consumer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out with {} of {expected} dead letters", out.len())
                })
                .expect("consumer open")
                .unwrap();
            out.push(delivery);
        }
        let _ = ch.close(200, "drained".into()).await;
        out
    }

    /// Stops the worker if it runs and drops the test's database and queues.
    pub async fn teardown(mut self) {
        if self.worker.is_some() {
            self.stop_worker().await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
        self.pool.close().await;
        remove_resources(&self.topology, &self.settings.db.database_url).await;
        self.torn_down = true;
    }
}

impl Drop for TestApp {
    /// A test that failed never reached `teardown`: its database and queues go all the same,
    /// from a thread and runtime of their own, since the test's runtime is unwinding.
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if let Some((token, _)) = &self.worker {
            token.cancel();
        }
        let topology = self.topology.clone();
        let url = self.settings.db.database_url.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(remove_resources(&topology, &url));
        })
        .join();
    }
}

/// Deletes a test's queues and exchanges and drops its database, whoever still uses them.
async fn remove_resources(topology: &Topology, database_url: &str) {
    if let Ok(conn) = ingest::connect(&amqp_url()).await {
        let ch = conn.create_channel().await.unwrap();
        for q in [
            &topology.events_queue,
            &topology.commands_queue,
            &topology.dead_letter_queue,
        ] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        for x in [
            &topology.events_exchange,
            &topology.commands_exchange,
            &topology.dead_letter_exchange,
        ] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        let _ = conn.close(200, "test done".into()).await;
    }
    let root = PgPool::connect(&format!("{}/postgres", pg_root()))
        .await
        .unwrap();
    let name = database_url.rsplit('/').next().unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&root)
    .await;
    root.close().await;
}
