//! Client sessions: one client proxy per session, its push buffer, its binding to a connection,
//! and the authentication hook.
//!
//! **Client ids** are `<gateway-id>/<32 hex digits>`: 128 bits from the injected random source
//! (the operating system in production). They are secrets: logs show only
//! [`verse_core::push::redact_client_id`].
//!
//! **Push buffer and overflow policy.** Each session has one bounded ring of the last
//! `session_buffer` pushes (1024 by default), each with its sequence number (1, 2, …). It is
//! both the delivery queue of the session's open stream and the replay buffer of a
//! disconnected session. When the ring is full the *oldest* push is dropped (never blocking
//! the node's push stream, which serves every session of the gateway), counted in
//! `verse_gateway_push_dropped_total{reason="overflow"}`; a reader that fell behind skips the
//! dropped pushes (on `RegisterWithResume` the gap shows in the sequence numbers).
//!
//! **Grace.** When a session's stream closes the session stays for `session_grace` (30 s)
//! with its ring: `RegisterWithResume` with its client id (same principal) resumes it and
//! replays pushes after the client's last sequence number. After the grace it is removed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost_types::Any;
use tokio::sync::watch;
use tokio::time::Instant;
use verse_core::RandomSource;

/// The id of one accepted HTTP/2 connection (the binding rule's unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ConnectionId {
    /// A connection id not handed out before in this process (never 0).
    pub fn fresh() -> Self {
        ConnectionId(NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Credentials the [`AuthHook`] sees: the `Register` call's metadata (or a call's), or an HTTP
/// request's headers, with lowercase names (for example `authorization`,
/// `x-goverse-auth`, `x-username`, `x-password`). Values that are not ASCII are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Lowercase name → value.
    pub headers: BTreeMap<String, String>,
}

impl Credentials {
    /// The value of header `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Who a session or call authenticated as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name (`None`: anonymous).
    pub name: Option<String>,
    /// Roles granted to it (objects see them in `CallerIdentity::roles`).
    pub roles: Vec<String>,
}

/// The client proxy's pluggable hook: authentication (sees the credentials of `Register`, of
/// anonymous calls and of HTTP requests, and accepts them as a principal or refuses them:
/// `UNAUTHENTICATED` with the message) and request preprocessing ([`AuthHook::authorize_call`]).
pub trait AuthHook: Send + Sync + 'static {
    /// Authenticates `credentials`; `Err(message)` refuses.
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, String>;

    /// Whether [`AuthHook::authenticate`] looks at the credentials at all. A hook that
    /// answers `false` gets empty credentials on gRPC calls, which saves collecting every
    /// metadata entry per call. The default is `true`.
    fn reads_credentials(&self) -> bool {
        true
    }

    /// Request preprocessing: sees every call after authentication, before it is routed, and
    /// may refuse it (`PERMISSION_DENIED` over gRPC, 403 `ACCESS_DENIED` over HTTP; the method
    /// never runs). The default allows every call.
    fn authorize_call(
        &self,
        principal: &Principal,
        object_type: &str,
        id: &str,
        method: &str,
    ) -> Result<(), String> {
        let _ = (principal, object_type, id, method);
        Ok(())
    }
}

/// The default hook: everyone is anonymous and accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnonymous;

impl AuthHook for AllowAnonymous {
    fn authenticate(&self, _credentials: &Credentials) -> Result<Principal, String> {
        Ok(Principal::default())
    }

    fn reads_credentials(&self) -> bool {
        false
    }
}

/// A push shared by every session it went to (a broadcast stores one copy, not one per
/// session).
type SharedPush = Arc<Any>;

struct Ring {
    /// Sequence number of the next push (pushes start at 1; 0 is the register item).
    next_seq: u64,
    /// Consecutive pushes, oldest first: the item at index `i` has sequence number
    /// `next_seq - len + i`.
    items: VecDeque<SharedPush>,
}

impl Ring {
    /// Sequence number of the oldest push held.
    fn first_seq(&self) -> u64 {
        self.next_seq - self.items.len() as u64
    }
}

struct SessionState {
    ring: Ring,
    /// The connection whose stream is open now (`None`: disconnected).
    connection: Option<ConnectionId>,
    /// Generation of the stream attached now (a resumed session replaces the older stream).
    stream_generation: u64,
    disconnected_at: Option<Instant>,
}

/// One client session (its client proxy's state).
pub struct Session {
    client_id: String,
    principal: Principal,
    capacity: usize,
    state: Mutex<SessionState>,
    /// The last sequence number pushed: readers wait on it.
    latest: watch::Sender<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &verse_core::push::redact_client_id(&self.client_id))
            .finish_non_exhaustive()
    }
}

impl Session {
    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's client id (a secret).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The principal the session authenticated as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether the session's stream is open on `connection`.
    pub fn bound_to(&self, connection: ConnectionId) -> bool {
        self.state().connection == Some(connection)
    }

    /// Appends a push (dropping the oldest when full: module docs). Counts it in
    /// `verse_gateway_pushes_total`.
    pub fn push(&self, item: Any) {
        self.push_shared(Arc::new(item));
        metrics::counter!("verse_gateway_pushes_total").increment(1);
    }

    /// Appends a push without counting it (the caller counts a fan-out once).
    fn push_shared(&self, item: SharedPush) {
        let seq = {
            let mut state = self.state();
            let seq = state.ring.next_seq;
            state.ring.next_seq += 1;
            if state.ring.items.len() >= self.capacity {
                state.ring.items.pop_front();
                metrics::counter!("verse_gateway_push_dropped_total", "reason" => "overflow")
                    .increment(1);
            }
            state.ring.items.push_back(item);
            seq
        };
        self.latest.send_replace(seq);
    }

    /// Pushes with a sequence number above `after`, oldest first (appended to `out`, so a
    /// reader reuses one buffer).
    pub fn read_after_into(&self, after: u64, out: &mut VecDeque<(u64, Any)>) {
        let state = self.state();
        let first = state.ring.first_seq();
        let skip = after.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        out.extend(
            state
                .ring
                .items
                .iter()
                .enumerate()
                .skip(skip)
                .map(|(index, item)| (first + index as u64, Any::clone(item))),
        );
    }

    /// Pushes with a sequence number above `after`, oldest first.
    pub fn read_after(&self, after: u64) -> Vec<(u64, Any)> {
        let mut out = VecDeque::new();
        self.read_after_into(after, &mut out);
        out.into()
    }

    /// A receiver of the latest sequence number (changes on every push).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Attaches a stream on `connection` (replacing an older one); returns its generation.
    fn attach(&self, connection: ConnectionId) -> u64 {
        let mut state = self.state();
        state.stream_generation += 1;
        state.connection = Some(connection);
        state.disconnected_at = None;
        state.stream_generation
    }

    /// The stream of generation `generation` ended.
    fn detach(&self, generation: u64) {
        let mut state = self.state();
        if state.stream_generation == generation {
            state.connection = None;
            state.disconnected_at = Some(Instant::now());
        }
    }

    /// Whether stream `generation` is still the attached one.
    pub fn is_current(&self, generation: u64) -> bool {
        let state = self.state();
        state.stream_generation == generation && state.connection.is_some()
    }
}

/// Why a resume was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No session of that id on this gateway (never, or its grace passed).
    #[error("no session to resume")]
    Unknown,
    /// The session belongs to another principal.
    #[error("the session belongs to another principal")]
    OtherPrincipal,
}

/// The gateway's sessions.
pub struct Sessions {
    gateway_id: String,
    rng: RandomSource,
    capacity: usize,
    grace: Duration,
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("gateway_id", &self.gateway_id).finish_non_exhaustive()
    }
}

/// A stream attached to a session; detaches it (starting the grace) when dropped.
#[derive(Debug)]
pub struct Attachment {
    session: Arc<Session>,
    generation: u64,
}

impl Attachment {
    /// The session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Whether this stream is still the session's attached one (a resume elsewhere ends it).
    pub fn is_current(&self) -> bool {
        self.session.is_current(self.generation)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.session.detach(self.generation);
    }
}

impl Sessions {
    /// Sessions of gateway `gateway_id`, ids from `rng`, rings of `capacity` pushes, kept for
    /// `grace` after a disconnect.
    pub fn new(gateway_id: &str, rng: RandomSource, capacity: usize, grace: Duration) -> Self {
        Sessions {
            gateway_id: gateway_id.to_owned(),
            rng,
            capacity: capacity.max(1),
            grace,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `principal`, its stream attached on `connection`.
    pub fn open(&self, principal: Principal, connection: ConnectionId) -> Attachment {
        let client_id = format!("{}/{}", self.gateway_id, self.rng.hex_token(16));
        let session = Arc::new(Session {
            client_id: client_id.clone(),
            principal,
            capacity: self.capacity,
            state: Mutex::new(SessionState {
                ring: Ring { next_seq: 1, items: VecDeque::new() },
                connection: None,
                stream_generation: 0,
                disconnected_at: None,
            }),
            latest: watch::Sender::new(0),
        });
        let generation = session.attach(connection);
        let mut map = self.map();
        map.insert(client_id, session.clone());
        metrics::gauge!("verse_gateway_sessions").set(map.len() as f64);
        Attachment { session, generation }
    }

    /// Resumes session `client_id` for `principal` on `connection` (module docs).
    pub fn resume(
        &self,
        client_id: &str,
        principal: &Principal,
        connection: ConnectionId,
    ) -> Result<Attachment, ResumeError> {
        let session = self.get(client_id).ok_or(ResumeError::Unknown)?;
        if &session.principal != principal {
            return Err(ResumeError::OtherPrincipal);
        }
        let generation = session.attach(connection);
        // Wake the replaced stream's reader, so it sees it is no longer current and ends.
        session.latest.send_modify(|_| ());
        metrics::counter!("verse_gateway_sessions_resumed_total").increment(1);
        Ok(Attachment { session, generation })
    }

    /// The live session `client_id` (connected, or disconnected within its grace).
    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.map().get(client_id).cloned()
    }

    /// Delivers a push to `client_id`'s session, or to every session when it is empty;
    /// returns how many sessions got it (a push for an unknown session is dropped and
    /// counted).
    pub fn deliver(&self, client_id: &str, item: Any) -> usize {
        if client_id.is_empty() {
            let sessions: Vec<Arc<Session>> = self.map().values().cloned().collect();
            let item = Arc::new(item);
            for session in &sessions {
                session.push_shared(item.clone());
            }
            metrics::counter!("verse_gateway_pushes_total").increment(sessions.len() as u64);
            return sessions.len();
        }
        match self.get(client_id) {
            Some(session) => {
                session.push(item);
                1
            }
            None => {
                metrics::counter!("verse_gateway_push_dropped_total", "reason" => "no_session")
                    .increment(1);
                0
            }
        }
    }

    /// Removes sessions disconnected for longer than the grace; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, session| {
            let state = session.state();
            state.disconnected_at.is_none_or(|at| now.duration_since(at) < self.grace)
        });
        metrics::gauge!("verse_gateway_sessions").set(map.len() as f64);
        before - map.len()
    }

    /// Number of sessions (connected or within their grace).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(n: u8) -> Any {
        Any { type_url: "type.googleapis.com/t.M".into(), value: vec![n] }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_buffer_drop_oldest_resume_and_expire() {
        let sessions = Sessions::new("gw", RandomSource::from_seed(7), 2, Duration::from_secs(30));
        let attachment = sessions.open(Principal::default(), ConnectionId(1));
        let session = attachment.session().clone();
        let id = session.client_id().to_owned();
        assert!(id.starts_with("gw/") && id.len() == 3 + 32, "{id}");
        assert!(session.bound_to(ConnectionId(1)) && !session.bound_to(ConnectionId(2)));
        for n in 1..=3 {
            assert_eq!(sessions.deliver(&id, any(n)), 1);
        }
        // Capacity 2: the oldest push was dropped.
        let seqs: Vec<u64> = session.read_after(0).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(sessions.deliver("gw/unknown", any(9)), 0);
        drop(attachment);
        assert!(!session.bound_to(ConnectionId(1)));
        // Within the grace: resumable by the same principal only.
        let other = Principal { name: Some("mallory".into()), roles: vec![] };
        assert_eq!(
            sessions.resume(&id, &other, ConnectionId(2)).err(),
            Some(ResumeError::OtherPrincipal)
        );
        let resumed = sessions.resume(&id, &Principal::default(), ConnectionId(2)).expect("resume");
        assert!(resumed.session().bound_to(ConnectionId(2)));
        assert_eq!(resumed.session().read_after(2).len(), 1);
        assert_eq!(resumed.session().read_after(1).len(), 2, "a gap reads from the oldest held");
        assert!(resumed.session().read_after(3).is_empty());
        assert!(resumed.session().read_after(u64::MAX).is_empty());
        drop(resumed);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(sessions.sweep(), 1);
        assert_eq!(
            sessions.resume(&id, &Principal::default(), ConnectionId(3)).err(),
            Some(ResumeError::Unknown)
        );
    }
}
