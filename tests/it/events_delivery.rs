//! The event outbox and its delivery, at the library level, over real HTTP to a loopback
//! receiver started here (axum on 127.0.0.1:0) and a local-folder lake: retries on a schedule
//! with a fixed id and a fresh, valid Svix signature per attempt; a schedule that runs out; a
//! receiver that hangs past the sink's timeout; 410 (final) versus 408/409 (retried); 429 with
//! `Retry-After`; per-(user, resource) ordering within a batch and across batches (and that a
//! dead event does not hold the later ones back); a deliverer that died between writing
//! `delivered/` and rewriting `pending/` (at least once, nothing lost); redelivery of dead and
//! delivered events; sink filters and the files sink (manifest mode); `max_per_second`; and
//! the delivery lease (a second deliverer is `busy`, a dead one's lease is taken over).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use withings_lake::events::{
    Builder, DeliverOptions, Deliverer, DeliverySummary, Event, EventsError, Filter, Outbox, Record, Sink, SinkKind, Status,
    Webhook, sign,
};
use withings_lake::schema::Resource;
use withings_lake::secret::Secret;
use withings_lake::storage::{self, Location};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

// ---------------------------------------------------------------------------------------------
// The loopback receiver.

/// How long a test lets a delivery wait for retries to fall due. `deliver` returns as soon as
/// nothing is left to retry, so a passing test never waits this long; a slow machine only
/// makes it wait longer for retries that are due anyway.
const SETTLE: Duration = Duration::from_secs(60);

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    /// Sleep this long before answering.
    delay: Duration,
    /// Answer only once the test calls [`Receiver::release`].
    hold: bool,
    /// Bytes of the answer's body.
    body_len: usize,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply { status, retry_after: None, delay: Duration::ZERO, hold: false, body_len: 0 }
    }
}

/// One request the receiver got, in arrival order.
#[derive(Debug, Clone)]
struct Hit {
    /// Requests with the same `webhook-id` that arrived before this one.
    prior: usize,
    at: Instant,
    wall: DateTime<Utc>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn id(&self) -> &str {
        self.headers.get("webhook-id").map(String::as_str).unwrap_or_default()
    }
    fn envelope(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn event_type(&self) -> String {
        self.envelope()["event_type"].as_str().unwrap().to_string()
    }
}

/// The answer to a request, recorded just before it is sent.
#[derive(Debug, Clone)]
struct Answer {
    id: String,
    status: u16,
    at: Instant,
}

type Policy = Arc<dyn Fn(&Hit) -> Reply + Send + Sync>;

struct Shared {
    hits: Mutex<Vec<Hit>>,
    answers: Mutex<Vec<Answer>>,
    policy: Mutex<Policy>,
    released: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    shared: Arc<Shared>,
}

async fn handle(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let hit = {
        let headers: BTreeMap<String, String> =
            headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string())).collect();
        let mut hits = s.hits.lock().unwrap();
        let id = headers.get("webhook-id").cloned();
        let prior = hits.iter().filter(|h| h.headers.get("webhook-id") == id.as_ref()).count();
        let hit = Hit { prior, at: Instant::now(), wall: Utc::now(), headers, body: body.to_vec() };
        hits.push(hit.clone());
        hit
    };
    let policy = s.policy.lock().unwrap().clone();
    let reply = policy(&hit);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if reply.hold {
        let _ = s.released.subscribe().wait_for(|r| *r).await;
    }
    s.answers.lock().unwrap().push(Answer { id: hit.id().to_string(), status: reply.status, at: Instant::now() });
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), vec![b'x'; reply.body_len]).into_response();
    if let Some(v) = reply.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(v));
    }
    resp
}

impl Receiver {
    async fn start(policy: impl Fn(&Hit) -> Reply + Send + Sync + 'static) -> Receiver {
        let shared = Arc::new(Shared {
            hits: Mutex::default(),
            answers: Mutex::default(),
            policy: Mutex::new(Arc::new(policy)),
            released: tokio::sync::watch::channel(false).0,
        });
        let app = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, shared }
    }

    /// Changes how the receiver answers from now on.
    fn behave(&self, policy: impl Fn(&Hit) -> Reply + Send + Sync + 'static) {
        *self.shared.policy.lock().unwrap() = Arc::new(policy);
    }

    /// Lets the requests held by a `hold` reply be answered.
    fn release(&self) {
        self.shared.released.send_replace(true);
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    fn answers(&self) -> Vec<Answer> {
        self.shared.answers.lock().unwrap().clone()
    }

    fn hits_of(&self, id: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.id() == id).collect()
    }

    /// Waits (60 s at most: a deadline, not an expectation) until `n` requests have arrived.
    async fn wait_for(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.hits().len() < n {
            assert!(Instant::now() < until, "the receiver got {} requests, expected {n}", self.hits().len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lakes, sinks, events.

fn lake() -> (tempfile::TempDir, Location) {
    let dir = tempfile::tempdir().unwrap();
    let location = storage::open(dir.path().to_str().unwrap()).unwrap();
    (dir, location)
}

/// The same lake opened again (as another process would).
fn reopen(dir: &tempfile::TempDir) -> Location {
    storage::open(dir.path().to_str().unwrap()).unwrap()
}

fn key() -> Secret {
    sign::key_of(SECRET).unwrap()
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

fn hook(url: &str, timeout: Duration, schedule: Vec<Duration>) -> Sink {
    Sink {
        name: "hooks".into(),
        filter: Filter::default(),
        kind: SinkKind::Webhook(Webhook { url: url.to_string(), key: key(), max_per_second: None, timeout, concurrency: 4 }),
        retry_schedule: schedule,
    }
}

fn an_hour_ago() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(1)
}

/// An event built by hand: the envelope as the builder makes them.
fn event(id: &str, event_type: &str, user: &str) -> Event {
    let body = json!({
        "event_type": event_type,
        "user_id": user,
        "client_user_id": user,
        "team_id": "team-test",
        "data": { "user_id": user, "note": format!("event {id}") },
    });
    Event {
        id: id.to_string(),
        event_type: event_type.to_string(),
        user_id: user.to_string(),
        created_at: an_hour_ago(),
        body: body.to_string(),
    }
}

async fn deliver(outbox: &Outbox, wait: Duration) -> DeliverySummary {
    Deliverer::new(outbox.clone()).unwrap().deliver(DeliverOptions { wait, budget: None }).await.unwrap()
}

async fn list(outbox: &Outbox, status: Status) -> Vec<Record> {
    outbox.list(status).await.unwrap()
}

fn ids(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

fn assert_signed(hit: &Hit, key: &Secret) {
    let ts: i64 = hit.headers["webhook-timestamp"].parse().unwrap();
    let expected = sign::sign(key, hit.id(), ts, &hit.body);
    assert_eq!(hit.headers["webhook-signature"], expected, "webhook-signature of {}", hit.id());
    assert_eq!(hit.headers["svix-signature"], expected, "svix-signature of {}", hit.id());
    assert_eq!(hit.headers["svix-timestamp"], hit.headers["webhook-timestamp"]);
    assert_eq!(hit.headers["svix-id"], hit.headers["webhook-id"]);
}

// ---------------------------------------------------------------------------------------------
// Retries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_three_times_then_succeeds_with_the_same_id_and_fresh_valid_signatures() {
    let rx = Receiver::start(|h| Reply::status(if h.prior < 3 { 500 } else { 200 })).await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[50, 50, 50, 50]))]);
    let batch = "20260101T000000000Z-retry";
    let mut b = Builder::new(
        batch,
        an_hour_ago(),
        &withings_lake::events::EventsConfig { team_id: "team-test".into(), max_samples_per_event: 100, ..Default::default() },
    );
    b.connection_error("u1", "token_refresh_failed", "link again", "the refresh token was refused");
    let events = b.finish();
    assert_eq!(outbox.enqueue(batch, &events).await.unwrap(), 1);

    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.attempts, summary.failed_attempts, summary.delivered, summary.pending), (4, 3, 1, 0), "{summary:?}");
    let delivered = list(&outbox, Status::Delivered).await;
    assert_eq!(delivered.len(), 1);
    let r = &delivered[0];
    assert_eq!((r.id.as_str(), r.attempts, r.last_status), (events[0].id.as_str(), 4, Some(200)));
    assert!(r.delivered_at.is_some() && r.last_error.is_none(), "{r:?}");
    assert!(list(&outbox, Status::Pending).await.is_empty());

    let hits = rx.hits();
    assert_eq!(hits.len(), 4);
    let key = key();
    for h in &hits {
        assert_eq!(h.id(), events[0].id);
        assert_eq!(h.headers["svix-id"], events[0].id);
        assert_eq!(h.body, events[0].body.as_bytes(), "the stored body, byte for byte");
        assert_signed(h, &key);
        // The timestamp is the attempt's, not the event's (an hour old).
        let ts: i64 = h.headers["webhook-timestamp"].parse().unwrap();
        assert!((ts - h.wall.timestamp()).abs() <= 5, "stale webhook-timestamp {ts} at {}", h.wall);
        assert_eq!(h.headers["content-type"], "application/json");
    }
    let statuses: Vec<u16> = rx.answers().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_schedule_makes_the_event_dead() {
    let rx = Receiver::start(|_| Reply::status(500)).await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10, 10]))]);
    let e = event("msg_always500", "daily.data.steps.created", "u1");
    outbox.enqueue("20260101T000000000Z-x", std::slice::from_ref(&e)).await.unwrap();

    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.attempts, summary.dead, summary.delivered, summary.pending), (3, 1, 0, 0), "{summary:?}");
    let dead = list(&outbox, Status::Dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts, dead[0].last_status), (e.id.as_str(), 3, Some(500)));
    assert!(dead[0].last_error.as_deref().unwrap().contains("after 3 attempts"), "{:?}", dead[0].last_error);
    assert!(list(&outbox, Status::Pending).await.is_empty());
    assert!(list(&outbox, Status::Delivered).await.is_empty());
    assert_eq!(rx.hits().len(), 3);
    // Dead is dead: another pass sends nothing.
    deliver(&outbox, Duration::ZERO).await;
    assert_eq!(rx.hits().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_past_the_timeout_is_retried_later() {
    let rx = Receiver::start(|_| Reply { hold: true, ..Reply::status(200) }).await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_millis(1500), ms(&[1000, 50]))]);
    let e = event("msg_hang", "provider.connection.error", "u1");
    outbox.enqueue("20260101T000000000Z-x", std::slice::from_ref(&e)).await.unwrap();

    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.attempts, summary.failed_attempts, summary.delivered, summary.pending), (1, 1, 0, 1), "{summary:?}");
    let pending = list(&outbox, Status::Pending).await;
    assert_eq!(pending.len(), 1);
    let r = &pending[0];
    assert_eq!((r.attempts, r.last_status), (1, None));
    let error = r.last_error.as_deref().unwrap();
    assert!(error.contains("within 1.5 s"), "the error names the timeout: {error}");
    let pause = r.next_attempt_at - r.last_attempt_at.unwrap();
    assert!(pause >= chrono::Duration::milliseconds(1000), "next attempt by the schedule: {r:?}");
    assert_eq!(rx.hits().len(), 1);

    rx.behave(|_| Reply::status(200));
    rx.release();
    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.delivered, summary.pending), (1, 0), "{summary:?}");
    let delivered = list(&outbox, Status::Delivered).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!((delivered[0].id.as_str(), delivered[0].attempts, delivered[0].last_status), (e.id.as_str(), 2, Some(200)));
    // At least once: the receiver saw the body twice, with the same id.
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.id() == e.id && h.body == e.body.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_is_final_and_never_retried() {
    let rx = Receiver::start(|_| Reply::status(410)).await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10, 10]))]);
    let e = event("msg_gone", "daily.data.sleep.created", "u1");
    outbox.enqueue("20260101T000000000Z-x", std::slice::from_ref(&e)).await.unwrap();

    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.attempts, summary.failed_attempts, summary.dead, summary.pending), (1, 0, 1, 0), "{summary:?}");
    let dead = list(&outbox, Status::Dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts, dead[0].last_status), (e.id.as_str(), 1, Some(410)));
    assert!(dead[0].last_error.as_deref().unwrap().contains("410"), "{:?}", dead[0].last_error);
    deliver(&outbox, Duration::ZERO).await;
    deliver(&outbox, Duration::from_millis(200)).await;
    assert_eq!(rx.hits().len(), 1, "a 410 is never retried");
    assert!(list(&outbox, Status::Pending).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_conflict_are_retried() {
    let rx = Receiver::start(|h| {
        Reply::status(match h.prior {
            0 => 408,
            1 => 409,
            _ => 200,
        })
    })
    .await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10, 10]))]);
    let e = event("msg_408", "daily.data.sleep.created", "u1");
    outbox.enqueue("20260101T000000000Z-x", std::slice::from_ref(&e)).await.unwrap();

    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.dead, summary.pending), (0, 1), "408 is not final: {summary:?}");
    let pending = list(&outbox, Status::Pending).await;
    assert_eq!((pending[0].attempts, pending[0].last_status), (1, Some(408)));

    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.dead, summary.delivered, summary.pending), (0, 1, 0), "409 is not final: {summary:?}");
    let delivered = list(&outbox, Status::Delivered).await;
    assert_eq!((delivered[0].attempts, delivered[0].last_status), (3, Some(200)));
    let statuses: Vec<u16> = rx.answers().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [408, 409, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_when_longer_than_the_schedule() {
    let rx =
        Receiver::start(
            |h| {
                if h.prior == 0 { Reply { retry_after: Some("1"), ..Reply::status(429) } } else { Reply::status(200) }
            },
        )
        .await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10]))]);
    let e = event("msg_429", "daily.data.steps.updated", "u1");
    outbox.enqueue("20260101T000000000Z-x", std::slice::from_ref(&e)).await.unwrap();

    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.failed_attempts, summary.pending), (1, 1), "{summary:?}");
    let r = list(&outbox, Status::Pending).await.remove(0);
    assert_eq!((r.attempts, r.last_status), (1, Some(429)));
    let pause = r.next_attempt_at - r.last_attempt_at.unwrap();
    assert!(pause >= chrono::Duration::seconds(1), "Retry-After: 1 beats the 10 ms schedule: {pause}");

    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.delivered, summary.pending, summary.dead), (1, 0, 0), "{summary:?}");
    let delivered = list(&outbox, Status::Delivered).await;
    assert_eq!((delivered[0].id.as_str(), delivered[0].attempts), (e.id.as_str(), 2));
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    let gap = hits[1].at - hits[0].at;
    assert!(gap >= Duration::from_millis(950), "the retry came {gap:?} after the 429");
}

// ---------------------------------------------------------------------------------------------
// Ordering.

/// `.created` then `.updated` of (u1, steps), and an event of u2; the receiver refuses the
/// `.created` twice.
async fn ordering(two_batches: bool) {
    let rx = Receiver::start(|h| {
        let created = h.event_type().ends_with(".created") && h.envelope()["user_id"] == "u1";
        Reply::status(if created && h.prior < 2 { 500 } else { 200 })
    })
    .await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[50, 50, 50]))]);
    let created = event("msg_u1_created", "daily.data.steps.created", "u1");
    let updated = event("msg_u1_updated", "daily.data.steps.updated", "u1");
    let other = event("msg_u2_created", "daily.data.steps.created", "u2");
    if two_batches {
        outbox.enqueue("20260101T000000000Z-a", std::slice::from_ref(&created)).await.unwrap();
        outbox.enqueue("20260101T000000001Z-b", &[updated.clone(), other.clone()]).await.unwrap();
    } else {
        outbox.enqueue("20260101T000000000Z-a", &[created.clone(), updated.clone(), other.clone()]).await.unwrap();
    }

    // One pass: the other user's event goes; u1's `.updated` waits behind its `.created`.
    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.delivered, summary.pending), (1, 2), "{summary:?}");
    assert_eq!(ids(&list(&outbox, Status::Delivered).await), BTreeSet::from([other.id.clone()]));
    let pending = list(&outbox, Status::Pending).await;
    let waiting = pending.iter().find(|r| r.id == updated.id).unwrap();
    assert_eq!(waiting.attempts, 0, "the .updated was not attempted while its .created failed");
    assert!(rx.hits_of(&updated.id).is_empty());

    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.delivered, summary.pending), (2, 0), "{summary:?}");
    assert!(list(&outbox, Status::Pending).await.is_empty());

    let hits = rx.hits();
    let created_hits: Vec<&Hit> = hits.iter().filter(|h| h.id() == created.id).collect();
    let updated_hits: Vec<&Hit> = hits.iter().filter(|h| h.id() == updated.id).collect();
    assert_eq!(created_hits.len(), 3);
    assert_eq!(updated_hits.len(), 1);
    let accepted = rx.answers().into_iter().find(|a| a.id == created.id && a.status == 200).expect("the .created was accepted");
    assert!(
        updated_hits[0].at >= accepted.at,
        "the .updated arrived before the .created was answered 200: {:?}",
        hits.iter().map(|h| (h.id().to_string(), h.prior)).collect::<Vec<_>>()
    );
    let other_hit = hits.iter().position(|h| h.id() == other.id).unwrap();
    let second_created = hits.iter().position(|h| h.id() == created.id && h.prior == 1).unwrap();
    assert!(other_hit < second_created, "u2's event was not held back by u1's retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_never_overtakes_created_within_a_batch() {
    ordering(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_never_overtakes_created_across_batches() {
    ordering(true).await;
}

/// When the `.created` of a key runs out of retries it is dead, and the `.updated` behind it
/// is due at once: a delivery with time left to wait sends it, rather than leaving it pending
/// until the next delivery call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_event_takes_the_later_events_of_its_key_with_it_and_they_redeliver_in_order() {
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fixed.clone();
    let rx = Receiver::start(move |h| {
        let ok = f.load(std::sync::atomic::Ordering::SeqCst) || !h.event_type().ends_with(".created");
        Reply::status(if ok { 200 } else { 500 })
    })
    .await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10]))]);
    let created = event("msg_c", "daily.data.steps.created", "u1");
    let updated = event("msg_u", "daily.data.steps.updated", "u1");
    let other = event("msg_o", "daily.data.steps.updated", "u2");
    outbox.enqueue("20260101T000000000Z-a", &[created.clone(), updated.clone()]).await.unwrap();
    outbox.enqueue("20260101T000000001Z-b", std::slice::from_ref(&other)).await.unwrap();

    // The .created runs out of retries: the .updated of the same row goes dead with it,
    // unsent (a receiver never sees an update of a row it never got); other keys go on.
    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!(ids(&list(&outbox, Status::Dead).await), BTreeSet::from([created.id.clone(), updated.id.clone()]), "{summary:?}");
    assert!(rx.hits_of(&updated.id).is_empty(), "the .updated was never sent");
    assert_eq!(ids(&list(&outbox, Status::Delivered).await), BTreeSet::from([other.id.clone()]));
    let orphan = list(&outbox, Status::Dead).await.into_iter().find(|r| r.id == updated.id).unwrap();
    assert_eq!(orphan.attempts, 0);
    assert!(orphan.last_error.as_deref().unwrap_or("").contains("earlier event"), "{orphan:?}");

    // Redelivered together, they arrive in order.
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    outbox.redeliver(&[], true, Utc::now()).await.unwrap();
    let summary = deliver(&outbox, SETTLE).await;
    assert_eq!((summary.delivered, summary.dead, summary.pending), (2, 0, 0), "{summary:?}");
    let answered = rx.answers().iter().filter(|a| a.id == created.id && a.status == 200).map(|a| a.at).max().unwrap();
    assert!(rx.hits_of(&updated.id)[0].at >= answered, "order kept: the .updated after the .created's 200");
}

// ---------------------------------------------------------------------------------------------
// Crashes, redelivery.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_interrupted_between_delivered_and_pending_delivers_again() {
    let rx = Receiver::start(|_| Reply::status(200)).await;
    let (dir, location) = lake();
    let sinks = vec![hook(&rx.url, Duration::from_secs(5), ms(&[10]))];
    let pending_file = |batch: &str| dir.path().join(format!("_events/pending/hooks/{batch}.jsonl"));

    // A: enqueued, then the process died; the delivered record was written (copied here) but
    // the pending file was not rewritten. Another process delivers.
    let a = event("msg_a", "daily.data.steps.created", "u1");
    Outbox::new(location, sinks.clone()).enqueue("20260101T000000000Z-a", std::slice::from_ref(&a)).await.unwrap();
    let delivered_dir = dir.path().join("_events/delivered/hooks");
    std::fs::create_dir_all(&delivered_dir).unwrap();
    std::fs::copy(pending_file("20260101T000000000Z-a"), delivered_dir.join("20260101T000000000Z-a.jsonl")).unwrap();
    let outbox = Outbox::new(reopen(&dir), sinks.clone());
    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.delivered, summary.pending), (1, 0), "{summary:?}");
    assert_eq!(rx.hits_of(&a.id).len(), 1, "sent again, with its id");
    assert!(!pending_file("20260101T000000000Z-a").exists());
    let delivered = list(&outbox, Status::Delivered).await;
    assert!(delivered.iter().all(|r| r.id == a.id) && delivered.iter().any(|r| r.delivered_at.is_some()), "{delivered:?}");

    // B: really delivered, then the pending file is as before the settle (the delete never
    // happened): the next delivery sends it again, same id and body.
    let b = event("msg_b", "daily.data.steps.created", "u2");
    outbox.enqueue("20260101T000000000Z-b", std::slice::from_ref(&b)).await.unwrap();
    let before = std::fs::read(pending_file("20260101T000000000Z-b")).unwrap();
    assert_eq!(deliver(&outbox, Duration::ZERO).await.delivered, 1);
    assert!(!pending_file("20260101T000000000Z-b").exists());
    std::fs::write(pending_file("20260101T000000000Z-b"), &before).unwrap();
    let outbox = Outbox::new(reopen(&dir), sinks);
    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.delivered, summary.pending), (1, 0), "{summary:?}");
    let hits = rx.hits_of(&b.id);
    assert_eq!(hits.len(), 2, "at least once");
    assert!(hits.iter().all(|h| h.body == b.body.as_bytes()));
    assert!(list(&outbox, Status::Pending).await.is_empty(), "nothing left behind");
    let delivered = list(&outbox, Status::Delivered).await;
    assert_eq!(delivered.iter().filter(|r| r.id == b.id).count(), 2, "both deliveries in the history");
    assert!(list(&outbox, Status::Dead).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_delivered_events_are_redelivered_with_their_ids() {
    let rx = Receiver::start(|_| Reply::status(410)).await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10]))]);
    let events = [
        event("msg_r1", "daily.data.steps.created", "u1"),
        event("msg_r2", "daily.data.steps.created", "u2"),
        event("msg_r3", "daily.data.sleep.created", "u3"),
    ];
    let [e1, e2, e3] = events.clone();
    outbox.enqueue("20260101T000000000Z-a", &events).await.unwrap();
    assert_eq!(deliver(&outbox, Duration::ZERO).await.dead, 3);
    rx.behave(|_| Reply::status(200));

    // One by id.
    let queued = outbox.redeliver(std::slice::from_ref(&e1.id), false, Utc::now()).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!((queued[0].id.as_str(), queued[0].attempts, queued[0].last_status), (e1.id.as_str(), 0, None));
    assert_eq!(ids(&list(&outbox, Status::Dead).await), BTreeSet::from([e2.id.clone(), e3.id.clone()]));
    assert_eq!(ids(&list(&outbox, Status::Pending).await), BTreeSet::from([e1.id.clone()]));
    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.delivered, summary.pending), (1, 0), "{summary:?}");
    let d = list(&outbox, Status::Delivered).await;
    assert_eq!((d.len(), d[0].id.as_str(), d[0].attempts), (1, e1.id.as_str(), 1));
    let hits = rx.hits_of(&e1.id);
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].body, e1.body.as_bytes());
    assert!(!ids(&list(&outbox, Status::Dead).await).contains(&e1.id));

    // An unknown id refuses the whole call: nothing moves.
    let err = outbox.redeliver(&[e2.id.clone(), "msg_nope".into()], false, Utc::now()).await.unwrap_err();
    assert!(matches!(&err, EventsError::UnknownEvent { id } if id == "msg_nope"), "{err}");
    assert!(list(&outbox, Status::Pending).await.is_empty());
    assert_eq!(ids(&list(&outbox, Status::Dead).await), BTreeSet::from([e2.id.clone(), e3.id.clone()]));

    // All the dead ones.
    let queued = outbox.redeliver(&[], true, Utc::now()).await.unwrap();
    assert_eq!(ids(&queued), BTreeSet::from([e2.id.clone(), e3.id.clone()]));
    assert!(list(&outbox, Status::Dead).await.is_empty());
    assert_eq!(deliver(&outbox, Duration::ZERO).await.delivered, 2);
    assert_eq!(ids(&list(&outbox, Status::Delivered).await), ids(&queued).union(&ids(&d)).cloned().collect());
    for e in [&e2, &e3] {
        assert_eq!(rx.hits_of(&e.id).len(), 2, "once refused, once delivered: {}", e.id);
    }

    // A delivered one again: queued anew, its history stays.
    let queued = outbox.redeliver(std::slice::from_ref(&e1.id), false, Utc::now()).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert!(ids(&list(&outbox, Status::Delivered).await).contains(&e1.id));
    assert_eq!(deliver(&outbox, Duration::ZERO).await.delivered, 1);
    assert_eq!(rx.hits_of(&e1.id).len(), 3);
    assert!(list(&outbox, Status::Pending).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Sinks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_route_events_and_the_files_sink_writes_one_file_per_batch() {
    let rx = Receiver::start(|_| Reply::status(200)).await;
    let (_dir, location) = lake();
    let files_dir = tempfile::tempdir().unwrap();
    let mut webhook = hook(&rx.url, Duration::from_secs(5), ms(&[10]));
    webhook.filter = Filter(vec!["daily.data.*".into()]);
    let files = Sink {
        name: "files".into(),
        filter: Filter(vec!["provider.connection.*".into()]),
        kind: SinkKind::Files(reopen(&files_dir)),
        retry_schedule: ms(&[10]),
    };
    let outbox = Outbox::new(location, vec![webhook, files]);

    let batch = "20260101T000000000Z-mix";
    let at = an_hour_ago();
    let mut b = Builder::new(
        batch,
        at,
        &withings_lake::events::EventsConfig { team_id: "team-test".into(), max_samples_per_event: 100, ..Default::default() },
    );
    b.connection_created("u1", "31000001", &["user.metrics".into(), "user.activity".into()]);
    b.historical("u1", Resource::Steps, at - chrono::Duration::days(30), at);
    b.connection_error("u2", "token_refresh_failed", "link again", "refused");
    let mut events = b.finish();
    events.push(event("msg_daily_1", "daily.data.steps.created", "u1"));
    events.push(event("msg_daily_2", "daily.data.weight.updated", "u2"));
    assert_eq!(outbox.enqueue(batch, &events).await.unwrap(), 4, "2 webhook + 2 files; the historical one: nowhere");

    let summary = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((summary.delivered, summary.pending, summary.dead), (4, 0, 0), "{summary:?}");

    let got: BTreeSet<String> = rx.hits().iter().map(|h| h.event_type()).collect();
    assert_eq!(got, BTreeSet::from(["daily.data.steps.created".into(), "daily.data.weight.updated".into()]));
    assert_eq!(rx.hits().len(), 2);

    let names: Vec<String> =
        std::fs::read_dir(files_dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, [format!("{batch}.jsonl")]);
    let text = std::fs::read_to_string(files_dir.path().join(format!("{batch}.jsonl"))).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    let by_id: BTreeMap<&str, &Event> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    for line in &lines {
        let keys: BTreeSet<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "event_type", "created_at", "event"]), "{line}");
        let e = by_id[line["id"].as_str().unwrap()];
        assert!(e.event_type.starts_with("provider.connection."), "{line}");
        assert_eq!(line["event_type"], e.event_type.as_str());
        let created: DateTime<Utc> = line["created_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(created, e.created_at);
        assert_eq!(line["event"], serde_json::from_str::<Value>(&e.body).unwrap());
    }
    let delivered = list(&outbox, Status::Delivered).await;
    assert_eq!(delivered.len(), 4);
    assert_eq!(delivered.iter().filter(|r| r.sink == "files").count(), 2);
    assert!(delivered.iter().all(|r| r.delivered_at.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_second_paces_the_requests() {
    let rx = Receiver::start(|_| Reply::status(200)).await;
    let (_dir, location) = lake();
    let mut sink = hook(&rx.url, Duration::from_secs(5), ms(&[10]));
    if let SinkKind::Webhook(h) = &mut sink.kind {
        h.max_per_second = Some(10.0);
        h.concurrency = 5;
    }
    let outbox = Outbox::new(location, vec![sink]);
    // Five users: five keys, free to go in parallel but for the pace.
    let events: Vec<Event> =
        (0..5).map(|i| event(&format!("msg_pace{i}"), "daily.data.steps.created", &format!("u{i}"))).collect();
    outbox.enqueue("20260101T000000000Z-a", &events).await.unwrap();

    let deliverer = Deliverer::new(outbox.clone()).unwrap();
    let started = Instant::now();
    let summary = deliverer.deliver(DeliverOptions { wait: Duration::ZERO, budget: None }).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(summary.delivered, 5, "{summary:?}");
    assert!(elapsed >= Duration::from_millis(390), "5 events at 10/s took {elapsed:?}");
    let hits = rx.hits();
    // The requests themselves were paced (the fifth slot is 400 ms after the first, which is
    // after `started`), not only the call.
    let spread = hits.last().unwrap().at - started;
    assert!(spread >= Duration::from_millis(390), "the fifth request arrived {spread:?} after the start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deliverer_at_a_time_and_a_dead_ones_lease_is_taken_over() {
    // The first deliverer's request is held until the second has been turned away.
    let rx = Receiver::start(|_| Reply { hold: true, ..Reply::status(200) }).await;
    let (dir, location) = lake();
    let sinks = vec![hook(&rx.url, Duration::from_secs(5), ms(&[10]))];
    let e = event("msg_lease", "daily.data.steps.created", "u1");
    Outbox::new(location.clone(), sinks.clone()).enqueue("20260101T000000000Z-a", std::slice::from_ref(&e)).await.unwrap();

    let first = Deliverer::new(Outbox::new(location, sinks.clone())).unwrap();
    let running =
        tokio::spawn(async move { first.deliver(DeliverOptions { wait: Duration::ZERO, budget: None }).await.unwrap() });
    rx.wait_for(1).await;
    // The event is still in pending/ while the first deliverer waits for the answer.
    let second = Outbox::new(reopen(&dir), sinks.clone());
    let summary = deliver(&second, Duration::from_secs(2)).await;
    assert!(summary.busy, "{summary:?}");
    assert_eq!((summary.attempts, summary.delivered), (0, 0));
    rx.release();
    let summary = running.await.unwrap();
    assert_eq!((summary.delivered, summary.busy), (1, false), "{summary:?}");
    assert_eq!(rx.hits().len(), 1, "the second deliverer sent nothing");
    // Released: the next one is not busy.
    assert!(!deliver(&second, Duration::ZERO).await.busy);

    // A deliverer killed mid-delivery leaves its lease; one of a process of this machine that
    // is gone is taken over at once.
    let holder = withings_lake::lease::process_holder();
    let (machine, _) = holder.rsplit_once(":pid").unwrap();
    let now = Utc::now();
    let stale = withings_lake::lease::LeaseRecord {
        holder: format!("{machine}:pid{}-00", 0x7fff_fffe_u32),
        acquired_at: now,
        heartbeat_at: now,
        expires_at: now + chrono::Duration::seconds(120),
    };
    std::fs::write(dir.path().join("_events/delivery.lock"), serde_json::to_vec(&stale).unwrap()).unwrap();
    rx.behave(|_| Reply::status(200));
    let f = event("msg_after_kill", "daily.data.steps.created", "u2");
    second.enqueue("20260101T000000000Z-b", std::slice::from_ref(&f)).await.unwrap();
    let summary = deliver(&second, Duration::ZERO).await;
    if machine.contains("unknown") {
        assert!(summary.busy, "without /proc no holder is presumed dead: {summary:?}");
    } else {
        assert_eq!((summary.busy, summary.delivered), (false, 1), "{summary:?}");
        assert_eq!(rx.hits_of(&f.id).len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_read_up_to_64_kib_a_2xx_still_delivers() {
    // First a 500 with a 1 MiB page (not read: a failed attempt, retried), then a 200 with a
    // 1 MiB body (a delivery whatever follows the status: no duplicate).
    let rx = Receiver::start(|h| Reply { body_len: 1024 * 1024, ..Reply::status(if h.prior == 0 { 500 } else { 200 }) }).await;
    let (_dir, location) = lake();
    let outbox = Outbox::new(location, vec![hook(&rx.url, Duration::from_secs(5), ms(&[10]))]);
    let e = event("msg_big_answer", "daily.data.steps.created", "u1");
    outbox.enqueue("20260101T000000000Z-x", std::slice::from_ref(&e)).await.unwrap();
    let first = deliver(&outbox, Duration::ZERO).await;
    assert_eq!((first.delivered, first.pending), (0, 1), "{first:?}");
    let pending = list(&outbox, Status::Pending).await;
    let error = pending[0].last_error.as_deref().unwrap();
    assert!(error.contains("more than 65536 bytes"), "{error}");
    let again = deliver(&outbox, SETTLE).await;
    assert_eq!((again.delivered, again.pending), (1, 0), "{again:?}");
    assert_eq!(rx.hits_of(&e.id).len(), 2, "delivered on the 200, not sent again");
}
