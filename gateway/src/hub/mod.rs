//! The hub: the live state of the gateway between the routing core and the connections.
//!
//! It owns the routing [`Engine`] (behind one mutex, taken for routing events only), the
//! conversation map (a `DashMap` of conversation id → [`Conversation`], read on every
//! activity: the hot path), and the map of connected bots and agents. Connections call the
//! hub; the hub carries out the engine's [`Effect`]s by appending to transcripts and
//! queueing frames on outboxes, and saves each conversation's state to the store when it
//! changes. Nothing here awaits while holding a lock.
//!
//! Lock order: engine, then a conversation. The hot path takes only the conversation lock.

pub mod builtin_bot;
mod conversation;
pub mod outbox;
mod recovery;
mod sweep;
mod voice;

use std::collections::BTreeSet;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use conversation::{Ack, Appended, Author, Body, ConvInner, Conversation, Entry, Holder, NewActivity};
pub use outbox::Outbox;

use crate::auth::{Claims, Principal, Signer};
use crate::clock::Clock;
use crate::config::Config;
use crate::context::{Context, Value as CtxValue};
use crate::protocol::{self, ErrorCode, Inbound, Party, ProtocolError, Role};
use crate::routing::{ConvId, ConvStatus, Effect, Engine, EngineError, MemberKind};
use crate::store::{Record, Store};

/// Shared state of a running gateway.
pub struct Hub {
    pub cfg: Arc<Config>,
    pub clock: Clock,
    pub signer: Signer,
    engine: Mutex<Engine>,
    convs: DashMap<ConvId, Arc<Conversation>>,
    members: DashMap<Arc<str>, MemberConn>,
    /// Every configured member as it appears in activities (`from`).
    parties: std::collections::HashMap<String, Party>,
    /// Voice calls by stream number (the prefix of every binary media frame).
    calls: DashMap<u32, Arc<crate::voice::Call>>,
    next_stream: std::sync::atomic::AtomicU32,
    store: Arc<dyn Store>,
    /// Cancelled on SIGTERM/SIGINT: every connection says goodbye and ends.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per open WebSocket (`max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("conversations", &self.convs.len()).finish()
    }
}

impl From<EngineError> for ProtocolError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownWorkstream(_)
            | EngineError::UnknownQueue(_)
            | EngineError::UnknownMember(_)
            | EngineError::UnknownConversation(_) => ProtocolError::not_found(e.to_string()),
            EngineError::Duplicate(_) | EngineError::NotActive(_) => ProtocolError::bad_request(e.to_string()),
        }
    }
}

/// A connected bot or agent: its outbox and the audio format it asked for.
#[derive(Debug, Clone)]
pub struct MemberConn {
    pub outbox: Outbox,
    pub audio: switchboard_codecs::Format,
}

/// Who is sending a client activity.
#[derive(Debug, Clone)]
pub enum Sender {
    Customer,
    Member(Arc<str>),
}

/// A conversation's saved state: the engine's part and the hub's.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    workstream: String,
    customer: SavedParty,
    routing: crate::routing::ConvSnapshot,
    summary: Option<String>,
    survey_requested: bool,
    survey: Option<Value>,
    /// The customer token generation that resumes it (0: written before generations).
    #[serde(default)]
    token_gen: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedParty {
    id: String,
    name: String,
}

/// The dedup key of a client activity id from `sender`, as kept in memory and in the store.
pub(crate) fn client_key(sender: &str, client_activity_id: &str) -> String {
    let mut k = String::with_capacity(sender.len() + 1 + client_activity_id.len());
    k.push_str(sender);
    k.push('\u{1}');
    k.push_str(client_activity_id);
    k
}

pub(crate) fn closed_error() -> ProtocolError {
    ProtocolError::bad_request("the conversation has ended")
}

impl Hub {
    pub fn new(cfg: Config, store: Arc<dyn Store>, signer: Signer) -> Arc<Hub> {
        let engine = Engine::new(&cfg);
        let connections = Arc::new(tokio::sync::Semaphore::new(cfg.server.max_connections));
        let parties = cfg
            .bots
            .iter()
            .map(|b| (b.name.clone(), Party { id: b.name.clone(), name: b.name.clone(), role: Role::Bot }))
            .chain(
                cfg.agents
                    .iter()
                    .map(|a| (a.id.clone(), Party { id: a.id.clone(), name: a.name.clone(), role: Role::Agent })),
            )
            .collect();
        Arc::new(Hub {
            cfg: Arc::new(cfg),
            clock: Clock::new(),
            signer,
            engine: Mutex::new(engine),
            convs: DashMap::new(),
            members: DashMap::new(),
            parties,
            calls: DashMap::new(),
            next_stream: std::sync::atomic::AtomicU32::new(1),
            store,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connections,
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn conversation(&self, id: &str) -> Option<Arc<Conversation>> {
        self.convs.get(id).map(|c| c.value().clone())
    }

    /// Runs `f` with the engine locked (read-only views for the admin API and tests).
    pub fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> T) -> T {
        f(&self.engine.lock())
    }

    /// Number of conversations in memory.
    pub fn conversation_count(&self) -> usize {
        self.convs.len()
    }

    fn member_party(&self, member: &str) -> Party {
        self.parties.get(member).cloned().unwrap_or_else(|| Party {
            id: member.to_owned(),
            name: member.to_owned(),
            role: Role::Agent,
        })
    }

    fn is_bot(&self, member: &str) -> bool {
        self.parties.get(member).is_some_and(|p| p.role == Role::Bot)
    }

    /// Checks a bearer token for a bot or agent connection.
    pub fn authenticate(&self, token: &str, want: Principal) -> Result<Arc<str>, ProtocolError> {
        let claims =
            self.signer.verify(token, self.clock.now_ms()).map_err(|e| ProtocolError::unauthorized(e.to_string()))?;
        if claims.kind != want {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!("a {:?} token cannot open this endpoint", claims.kind).to_lowercase(),
            ));
        }
        if want == Principal::Bot && self.engine.lock().is_disabled(&claims.sub) {
            return Err(ProtocolError::forbidden("this bot was disconnected by an administrator"));
        }
        Ok(Arc::from(claims.sub))
    }

    /// OAuth2 client credentials: a bot's app_id or an agent's id, and its secret.
    pub fn issue_token(&self, client_id: &str, client_secret: &str) -> Option<(String, u64)> {
        // A built-in bot runs inside the gateway; nobody signs in as it.
        let bot = self.cfg.bots.iter().find(|b| b.app_id == client_id && b.builtin.is_none());
        let (sub, kind, secret) = if let Some(b) = bot {
            (b.name.clone(), Principal::Bot, b.secret.as_ref())
        } else if let Some(a) = self.cfg.agents.iter().find(|a| a.id == client_id) {
            (a.id.clone(), Principal::Agent, a.secret.as_ref())
        } else {
            // Compare against a dummy all the same, so timing does not reveal which ids exist.
            let _ = crate::config::Secret::new("x".repeat(32)).matches(client_secret);
            return None;
        };
        if !secret?.matches(client_secret) {
            return None;
        }
        let ttl = self.cfg.server.token_ttl_secs;
        let exp = self.clock.now_ms() + ttl * 1000;
        Some((self.signer.issue(&Claims { sub, kind, exp, generation: 0 }), ttl))
    }

    /// Checks a customer's `session.start` context against the workstream's declarations.
    pub fn customer_context(&self, workstream: &str, raw: &Value) -> Result<Context, ProtocolError> {
        let ws = self
            .cfg
            .workstream(workstream)
            .ok_or_else(|| ProtocolError::not_found(format!("unknown workstream {workstream:?}")))?;
        let mut ctx = Context::new();
        let obj = match raw {
            Value::Null => return Ok(ctx),
            Value::Object(o) => o,
            _ => return Err(ProtocolError::bad_request("context must be an object")),
        };
        for (k, v) in obj {
            let ty = ws.variable(k).ok_or_else(|| {
                ProtocolError::bad_request(format!(
                    "context variable {k:?} is not declared by workstream {workstream:?}"
                ))
            })?;
            if let Some(v) = CtxValue::from_json(ty, v)
                .map_err(|e| ProtocolError::bad_request(format!("context variable {k:?}: {e}")))?
            {
                ctx.insert(k.clone(), v);
            }
        }
        Ok(ctx)
    }

    /// Saves a conversation's current state (called with the engine locked).
    fn persist(&self, engine: &Engine, conv: &Conversation) {
        let Some(routing) = engine.snapshot(&conv.id) else { return };
        let open = routing.status != "closed";
        let inner = conv.inner.lock();
        let saved = Saved {
            workstream: conv.workstream.clone(),
            customer: SavedParty { id: conv.customer.id.clone(), name: conv.customer.name.clone() },
            routing,
            summary: inner.summary.clone(),
            survey_requested: inner.survey_requested,
            survey: inner.survey.clone(),
            token_gen: inner.token_gen,
        };
        drop(inner);
        let state = serde_json::to_string(&saved).unwrap_or_default();
        self.store.record(Record::Conversation { id: conv.id.clone(), open, state }, None);
    }

    /// The token a customer resumes conversation `id` with, generation `generation`.
    fn customer_token(&self, id: &str, generation: u64) -> String {
        let exp = self.clock.now_ms() + self.cfg.server.customer_token_ttl_secs * 1000;
        self.signer.issue(&Claims { sub: id.to_owned(), kind: Principal::Customer, exp, generation })
    }

    /// A customer starts a conversation: `session.started` goes out first, then the engine
    /// routes it and its effects (position, assignment) follow.
    pub fn start_conversation(
        &self,
        workstream: &str,
        user_name: &str,
        context: Context,
        outbox: &Outbox,
    ) -> Result<Arc<Conversation>, ProtocolError> {
        let id: ConvId = Arc::from(format!("c_{:032x}", rand::random::<u128>()));
        self.open_conversation(id, workstream, user_name, context, outbox, None)
    }

    fn open_conversation(
        &self,
        id: ConvId,
        workstream: &str,
        user_name: &str,
        context: Context,
        outbox: &Outbox,
        call: Option<Arc<crate::voice::Call>>,
    ) -> Result<Arc<Conversation>, ProtocolError> {
        let now = self.clock.now_ms();
        let token = self.customer_token(&id, 1);
        let conv = Arc::new(Conversation {
            id: id.clone(),
            workstream: workstream.to_owned(),
            customer: Party { id: format!("u_{}", &id[2..14]), name: user_name.to_owned(), role: Role::User },
            inner: Mutex::new(ConvInner {
                customer: Some(outbox.clone()),
                last_activity_ms: now,
                token_gen: 1,
                ..ConvInner::default()
            }),
            call: call.clone(),
        });
        let mut engine = self.engine.lock();
        if engine.status(&id).is_some() {
            return Err(ProtocolError::unavailable("conversation id collision; try again"));
        }
        let mut started =
            json!({"conversationId": &*id, "token": token, "user": {"id": conv.customer.id, "name": user_name}});
        if let Some(c) = &call {
            started["stream"] = json!(c.stream);
        }
        outbox.send(protocol::event("session.started", started, Some(&id)));
        let fx = engine.start(id.clone(), workstream, context, now)?;
        self.convs.insert(id.clone(), conv.clone());
        if let Some(c) = call {
            self.calls.insert(c.stream, c);
        }
        tracing::debug!(conversation.id = %id, workstream, "conversation started");
        self.persist(&engine, &conv);
        self.apply(&mut engine, fx);
        Ok(conv)
    }

    /// A customer resumes after a drop: `session.started`, then every committed activity
    /// after the watermark, in order, then the current queue position if waiting. Done
    /// under the conversation lock, so nothing live can slip between the replay and what
    /// follows.
    pub fn resume_conversation(
        &self,
        conv_id: &str,
        token: &str,
        watermark: u64,
        outbox: &Outbox,
    ) -> Result<Arc<Conversation>, ProtocolError> {
        let claims = self
            .signer
            .verify(token, self.clock.now_ms())
            .map_err(|e| ProtocolError::unauthorized(format!("cannot resume: {e}")))?;
        if claims.kind != Principal::Customer || claims.sub != conv_id {
            return Err(ProtocolError::unauthorized("cannot resume: the token is not for this conversation"));
        }
        let conv = self
            .conversation(conv_id)
            .ok_or_else(|| ProtocolError::not_found(format!("unknown conversation {conv_id:?}")))?;
        let engine = self.engine.lock();
        let position = engine.conversation(conv_id).and_then(|v| v.position.map(|p| (v.queue, p)));
        let mut inner = conv.inner.lock();
        // A token resumes once: each resume issues the next generation, so a copied or
        // replayed token cannot take the conversation over after the rightful client came
        // back. An ended conversation is resumed only to answer the survey it asked for.
        if claims.generation != inner.token_gen {
            return Err(ProtocolError::unauthorized(
                "cannot resume: this token was replaced by a newer one (each session.started issues a new token)",
            ));
        }
        if inner.closed && !(inner.survey_requested && inner.survey.is_none()) {
            return Err(ProtocolError::unauthorized("cannot resume: the conversation has ended"));
        }
        inner.token_gen += 1;
        let token = self.customer_token(conv_id, inner.token_gen);
        if let Some(old) = inner.customer.replace(outbox.clone())
            && old.id() != outbox.id()
        {
            old.close(outbox::Reason::ResumedElsewhere, "resumed on another connection");
        }
        inner.customer_left_ms = None;
        outbox.send(protocol::event(
            "session.started",
            json!({"conversationId": conv_id, "token": &token, "resumed": true,
                   "user": {"id": conv.customer.id, "name": conv.customer.name}}),
            Some(conv_id),
        ));
        let from = usize::try_from(watermark).unwrap_or(usize::MAX).min(inner.committed as usize);
        outbox.send_batch(inner.committed_frames()[from..].iter().map(|e| e.frame.clone()).collect());
        inner.customer_sent = inner.committed;
        if let Some((queue, p)) = position
            && !inner.closed
        {
            outbox.send(protocol::event("queue.position", json!({"queue": queue, "position": p}), Some(conv_id)));
        }
        drop(inner);
        self.persist(&engine, &conv);
        Ok(conv)
    }

    /// Detaches a customer's connection (it can resume for a while).
    pub fn customer_left(&self, conv: &Conversation, outbox: &Outbox) {
        let mut inner = conv.inner.lock();
        if inner.customer.as_ref().is_some_and(|o| o.id() == outbox.id()) {
            inner.customer = None;
            inner.customer_left_ms = Some(self.clock.now_ms());
        }
    }

    /// Stores a client's activity, delivers it, and acknowledges it once committed. A repeated
    /// `clientActivityId` from the same sender is acknowledged again and not delivered twice.
    /// `check` runs under the conversation lock, atomically with the append.
    pub fn post(
        &self,
        conv: &Arc<Conversation>,
        sender: &Sender,
        reply: &Outbox,
        a: &Inbound,
        check: impl FnOnce(&ConvInner) -> Result<(), ProtocolError>,
    ) -> Result<Appended, ProtocolError> {
        let unknown;
        let (from, author) = match sender {
            Sender::Customer => (&conv.customer, Author::Customer),
            Sender::Member(m) => match self.parties.get(&**m) {
                Some(p) => (p, Author::Member(m.clone())),
                None => {
                    unknown = self.member_party(m);
                    (&unknown, Author::Member(m.clone()))
                }
            },
        };
        if a.kind() == protocol::Kind::Message && a.text.as_deref().is_none_or(str::is_empty) && !a.has_attachments() {
            return Err(ProtocolError::bad_request("a message needs text or attachments"));
        }
        let mut inner = conv.inner.lock();
        check(&inner)?;
        // A conversation holds a bounded transcript; its end and a survey answer always fit.
        let limit = self.cfg.server.max_conversation_bytes;
        if !matches!(a.kind(), protocol::Kind::EndOfConversation)
            && a.event_name() != Some("survey.response")
            && inner.bytes + a.text.as_ref().map_or(0, String::len) > limit
        {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("this conversation has reached its limit of {limit} bytes; it can only be ended"),
            ));
        }
        let cid = a.client_activity_id();
        // One string per client activity id: the dedup map's key and the store's.
        let key = cid.map(|c| client_key(&from.id, c));
        let ack = Ack { to: reply.clone(), client_activity_id: cid.map(str::to_owned) };
        if let Some(k) = &key
            && let Some(&seq) = inner.seen.get(k)
        {
            // Acknowledge again once it is durable (it may still be in flight), on the
            // connection that asked this time: the first one may be gone.
            let appended = Appended { id: conv.activity_id(seq), seq };
            inner.ack_when_stored(conv, seq, ack);
            return Ok(appended);
        }
        let body = Body {
            kind: a.kind(),
            text: a.text.as_deref(),
            name: a.name.as_deref(),
            value: &a.value,
            attachments: a.attachments.as_deref(),
            channel_data: a.channel_data.as_deref(),
        };
        let appended = inner.append(
            conv,
            &self.clock,
            self.store.as_ref(),
            NewActivity { from, author, body, client_key: key.clone(), ack: Some(ack) },
        );
        if let Some(k) = key {
            inner.seen.insert(k, appended.seq);
        }
        // A customer's message starts the bot's clock; anything from the bot stops it.
        match sender {
            Sender::Customer if a.kind() == protocol::Kind::Message => {
                if let Some(h) = &inner.holder
                    && self.is_bot(&h.member)
                    && inner.bot_deadline_ms.is_none()
                {
                    inner.bot_deadline_ms = Some(self.clock.now_ms() + self.cfg.server.bot_reply_timeout_secs * 1000);
                }
            }
            Sender::Member(_) => inner.bot_deadline_ms = None,
            Sender::Customer => {}
        }
        Ok(appended)
    }

    /// Appends a gateway-made activity (notices, survey requests).
    fn append_system(&self, conv: &Arc<Conversation>, inner: &mut ConvInner, body: Body<'_>) -> Appended {
        let from = Party::system();
        inner.append(
            conv,
            &self.clock,
            self.store.as_ref(),
            NewActivity { from: &from, author: Author::System, body, client_key: None, ack: None },
        )
    }

    /// A `system` message in the transcript explaining what the gateway did and why.
    fn notice(&self, conv: &Arc<Conversation>, text: &str) {
        let mut inner = conv.inner.lock();
        self.append_system(conv, &mut inner, Body::message(text));
    }

    /// The gateway ends the conversation: an `endOfConversation` from `system` saying why,
    /// so the customer and the holder both learn of it.
    fn end_notice(&self, conv: &Arc<Conversation>, why: &str) {
        let mut inner = conv.inner.lock();
        let v = Value::Null;
        let body = Body { kind: protocol::Kind::EndOfConversation, text: Some(why), ..Body::event("", &v) };
        self.append_system(conv, &mut inner, Body { name: None, ..body });
    }

    /// The customer ends the conversation.
    pub fn customer_end(&self, conv: &Arc<Conversation>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let mut engine = self.engine.lock();
        self.post(conv, &Sender::Customer, reply, a, |inner| if inner.closed { Err(closed_error()) } else { Ok(()) })?;
        self.close_locked(&mut engine, conv);
        Ok(())
    }

    /// A customer's survey answer, kept on the conversation.
    pub fn survey_response(&self, conv: &Arc<Conversation>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let rating = a.value.get("rating").and_then(Value::as_u64).filter(|r| (1..=5).contains(r));
        if rating.is_none() {
            return Err(ProtocolError::bad_request("survey.response needs value.rating, a whole number from 1 to 5"));
        }
        if a.value.get("comment").is_some_and(|c| !c.is_string() && !c.is_null()) {
            return Err(ProtocolError::bad_request("survey.response comment must be text"));
        }
        let engine = self.engine.lock();
        self.post(conv, &Sender::Customer, reply, a, |inner| {
            if !inner.survey_requested {
                Err(ProtocolError::bad_request("no survey was requested in this conversation"))
            } else if inner.survey.is_some() {
                Err(ProtocolError::bad_request("the survey has already been answered"))
            } else {
                Ok(())
            }
        })?;
        conv.inner.lock().survey = Some(a.value.clone());
        self.persist(&engine, conv);
        Ok(())
    }

    fn close_locked(&self, engine: &mut Engine, conv: &Arc<Conversation>) {
        {
            let mut inner = conv.inner.lock();
            inner.closed = true;
            inner.closed_at_ms = Some(self.clock.now_ms());
            inner.bot_deadline_ms = None;
        }
        let fx = engine.close(&conv.id);
        if let Some(call) = &conv.call {
            call.set_route(None);
            self.calls.remove(&call.stream);
        }
        tracing::debug!(conversation.id = %conv.id, "conversation closed");
        self.persist(engine, conv);
        self.apply(engine, fx);
    }

    /// Checks that `member` holds the conversation (under the engine lock).
    fn held(&self, engine: &Engine, conv_id: &str, member: &str) -> Result<(), ProtocolError> {
        match engine.holder(conv_id) {
            Some(h) if h == member => Ok(()),
            _ if engine.status(conv_id).is_none() => {
                Err(ProtocolError::not_found(format!("unknown conversation {conv_id:?}")))
            }
            _ => Err(ProtocolError::forbidden(format!("you do not hold conversation {conv_id:?}"))),
        }
    }

    /// The conversation a bot or agent frame names.
    pub fn named_conversation(&self, a: &Inbound) -> Result<Arc<Conversation>, ProtocolError> {
        let id = a.conversation_id().ok_or_else(|| ProtocolError::bad_request("activity has no conversation.id"))?;
        self.conversation(id).ok_or_else(|| ProtocolError::not_found(format!("unknown conversation {id:?}")))
    }

    /// A message or typing from the holder.
    pub fn member_post(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let conv = self.named_conversation(a)?;
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |inner| match &inner.holder {
            Some(h) if h.member == *member => Ok(()),
            _ => Err(ProtocolError::forbidden(format!("you do not hold conversation {:?}", conv.id))),
        })?;
        Ok(())
    }

    /// The holder bot transfers to an agent (`handoff.initiate`, the Escalate topic): the
    /// context variables in `value` are merged and the rules run again.
    pub fn handoff(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let conv = self.named_conversation(a)?;
        let vars = self.handoff_vars(&conv.workstream, &a.value)?;
        let mut engine = self.engine.lock();
        self.held(&engine, &conv.id, member)?;
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |_| Ok(()))?;
        if let Some(s) = &a.text {
            conv.inner.lock().summary = Some(s.clone());
        }
        let fx = engine.escalate(&conv.id, vars, self.clock.now_ms())?;
        tracing::debug!(conversation.id = %conv.id, bot = %member, "escalated");
        self.apply(&mut engine, fx);
        Ok(())
    }

    /// Checks the variables a bot sets: declared ones must have their type; undeclared ones
    /// (Copilot Studio's `va_*`, say) are kept for the agent but cannot drive routing.
    fn handoff_vars(&self, workstream: &str, value: &Value) -> Result<Vec<(String, Option<CtxValue>)>, ProtocolError> {
        let ws = self.cfg.workstream(workstream);
        let obj = match value {
            Value::Null => return Ok(Vec::new()),
            Value::Object(o) => o,
            _ => {
                return Err(ProtocolError::bad_request(
                    "handoff.initiate value must be an object of context variables",
                ));
            }
        };
        obj.iter()
            .map(|(k, v)| {
                let parsed = match ws.and_then(|w| w.variable(k)) {
                    Some(ty) => CtxValue::from_json(ty, v)
                        .map_err(|e| ProtocolError::bad_request(format!("context variable {k:?}: {e}")))?,
                    None => CtxValue::from_json_untyped(v),
                };
                Ok((k.clone(), parsed))
            })
            .collect()
    }

    /// The holder ends the conversation ("End the conversation"); with `value.survey` the
    /// customer gets `survey.request` first.
    pub fn member_end(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let conv = self.named_conversation(a)?;
        let survey = match a.value.get("survey") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ProtocolError::bad_request("value.survey must be true or false")),
        };
        let mut engine = self.engine.lock();
        self.held(&engine, &conv.id, member)?;
        if survey {
            let mut inner = conv.inner.lock();
            inner.survey_requested = true;
            let v = json!({"rating": {"min": 1, "max": 5}, "comment": true});
            self.append_system(&conv, &mut inner, Body::event("survey.request", &v));
        }
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |_| Ok(()))?;
        self.close_locked(&mut engine, &conv);
        Ok(())
    }

    /// `transcript.request` from the holder: the page of the transcript before
    /// `value.before` (a seq; absent: the newest page), newest first within the page limit,
    /// answered with a `transcript.page` event (`transcriptFrom`, `transcriptComplete`).
    pub fn transcript_page(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let conv = self.named_conversation(a)?;
        let before = match a.value.get("before") {
            None | Some(Value::Null) => u64::MAX,
            Some(v) => {
                v.as_u64().ok_or_else(|| ProtocolError::bad_request("transcript.request value.before must be a seq"))?
            }
        };
        let inner = conv.inner.lock();
        if inner.holder.as_ref().is_none_or(|h| h.member != *member) {
            return Err(ProtocolError::forbidden(format!("you do not hold conversation {:?}", conv.id)));
        }
        let end = before.saturating_sub(1).min(inner.committed) as usize;
        let frames = &inner.transcript[..end];
        let start = conversation::page_start(frames, self.cfg.server.transcript_page_bytes);
        let id = serde_json::to_string(&*conv.id).unwrap_or_default();
        let head = format!(
            "{{\"type\":\"event\",\"name\":\"transcript.page\",\"conversation\":{{\"id\":{id}}},\"value\":{{\"before\":{},\"transcript\":[",
            end + 1
        );
        reply.send(conversation::splice_page(&head, &frames[start..], start as u64 + 1));
        Ok(())
    }

    /// The holder transfers to a named queue, or back through the rules.
    pub fn transfer(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), ProtocolError> {
        let conv = self.named_conversation(a)?;
        let queue = match a.value.get("queue") {
            None | Some(Value::Null) => None,
            Some(Value::String(q)) => Some(q.clone()),
            Some(_) => return Err(ProtocolError::bad_request("transfer value.queue must be a queue name")),
        };
        if let Some(q) = &queue
            && self.cfg.queue(q).is_none()
        {
            return Err(ProtocolError::not_found(format!("unknown queue {q:?}")));
        }
        let mut engine = self.engine.lock();
        self.held(&engine, &conv.id, member)?;
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |_| Ok(()))?;
        let fx = engine.transfer(&conv.id, queue.as_deref(), self.clock.now_ms())?;
        self.apply(&mut engine, fx);
        Ok(())
    }

    /// An agent's presence.
    pub fn presence(&self, member: &str, presence: crate::routing::Presence) -> Result<(), ProtocolError> {
        let mut engine = self.engine.lock();
        let fx = engine.set_presence(member, presence)?;
        self.apply(&mut engine, fx);
        Ok(())
    }

    /// A bot or agent connects: its earlier connection (if any) is replaced, the
    /// conversations it still holds are assigned to it again with their transcript, and it
    /// becomes eligible for new work.
    pub fn member_connected(&self, member: &Arc<str>, outbox: &Outbox, audio: switchboard_codecs::Format) {
        let conn = MemberConn { outbox: outbox.clone(), audio };
        if let Some(old) = self.members.insert(member.clone(), conn)
            && old.outbox.id() != outbox.id()
        {
            old.outbox.close(outbox::Reason::Replaced, "replaced by a newer connection");
        }
        let mut engine = self.engine.lock();
        // Under the engine lock only what is cheap: each held conversation gets its work
        // item's head; the transcripts are spliced in below, once routing can go on (a bot
        // holding a thousand conversations would otherwise stall all routing meanwhile).
        let mut resumed = Vec::new();
        for conv_id in engine.held_by(member) {
            if let Some(conv) = self.conversation(&conv_id) {
                let mut inner = conv.inner.lock();
                if let Some(h) = inner.holder.as_mut() {
                    h.outbox = Some(outbox.clone());
                    h.gone_since_ms = None;
                }
                if let Some(call) = &conv.call {
                    call.set_holder_outbox(member, Some(outbox.clone()), Some(audio));
                }
                let head = self.assigned_head(&engine, &conv, &inner, true);
                inner.set_work(head, self.cfg.server.transcript_page_bytes);
                drop(inner);
                resumed.push(conv);
            }
        }
        let fx = engine.set_online(member, true, self.clock.now_ms()).unwrap_or_default();
        tracing::info!(member = %member, "member connected");
        self.apply(&mut engine, fx);
        drop(engine);
        for conv in resumed {
            conv.inner.lock().flush();
        }
    }

    /// A bot or agent's connection ended. Its conversations stay with it for a grace period
    /// (it may come back: see the sweeper); it gets no new work meanwhile.
    pub fn member_disconnected(&self, member: &Arc<str>, outbox: &Outbox) {
        let removed = self.members.remove_if(member, |_, c| c.outbox.id() == outbox.id()).is_some();
        if !removed {
            return; // A newer connection has taken over.
        }
        let now = self.clock.now_ms();
        let mut engine = self.engine.lock();
        let mut calls = Vec::new();
        for conv_id in engine.held_by(member) {
            if let Some(conv) = self.conversation(&conv_id) {
                if let Some(h) = conv.inner.lock().holder.as_mut() {
                    h.outbox = None;
                    h.gone_since_ms = Some(now);
                }
                if let Some(call) = &conv.call {
                    call.set_holder_outbox(member, None, None);
                    calls.push(conv);
                }
            }
        }
        // A caller cannot wait out a grace period in silence: a call whose holder is gone
        // is re-routed at once (a bot's to people, never back to that bot).
        if !self.shutdown.is_cancelled() {
            for conv in calls {
                self.holder_lost(&mut engine, &conv, member, now);
            }
        }
        let fx = engine.set_online(member, false, now).unwrap_or_default();
        tracing::info!(member = %member, "member disconnected");
        self.apply(&mut engine, fx);
    }

    /// The `conversation.assigned` event a holder gets, up to its transcript (spliced in
    /// when it is sent, see [`ConvInner::give_work`]): the context, the bot's summary, the
    /// media of a call, and then the transcript so far (with the bot's part of it, for an
    /// agent).
    fn assigned_head(&self, engine: &Engine, conv: &Conversation, inner: &ConvInner, resumed: bool) -> String {
        let view = engine.conversation(&conv.id);
        let mut value = json!({
            "workstream": conv.workstream,
            "queue": view.as_ref().map(|v| v.queue.clone()),
            "channel": view.as_ref().map(|v| v.channel),
            "context": view.as_ref().map(|v| &v.context),
            "customer": {"id": conv.customer.id, "name": conv.customer.name},
            "summary": inner.summary,
            "media": Value::Null,
        });
        if let Some(call) = &conv.call {
            let fmt =
                inner.holder.as_ref().and_then(|h| self.members.get(&h.member).map(|m| m.audio)).unwrap_or_default();
            value["media"] =
                json!({"stream": call.stream, "encoding": fmt.encoding().as_str(), "sampleRate": fmt.sample_rate()});
        }
        if resumed {
            value["resumed"] = json!(true);
        }
        // The transcript's frames are already JSON: they are spliced in rather than parsed.
        let head = serde_json::to_string(&value).unwrap_or_else(|_| "{}".into());
        let id = serde_json::to_string(&*conv.id).unwrap_or_default();
        let mut v = String::with_capacity(96 + id.len() + head.len());
        v.push_str("{\"type\":\"event\",\"name\":\"conversation.assigned\",\"conversation\":{\"id\":");
        v.push_str(&id);
        v.push_str("},\"value\":");
        v.push_str(&head[..head.len() - 1]);
        v.push_str(if head.len() > 2 { ",\"transcript\":[" } else { "\"transcript\":[" });
        v
    }

    /// Carries out the engine's effects, in order, then saves every conversation they
    /// touched. Called with the engine locked.
    fn apply(&self, engine: &mut Engine, fx: Vec<Effect>) {
        let mut touched: BTreeSet<ConvId> = BTreeSet::new();
        for e in fx {
            match e {
                Effect::Routed { conv, rule, queue, trigger } => {
                    tracing::debug!(conversation.id = %conv, ?trigger, rule = rule.as_deref().unwrap_or("(fallback)"), queue, "routed");
                    touched.insert(conv);
                }
                Effect::Released { conv, member } => {
                    if let Some(c) = self.conversation(&conv) {
                        let mut inner = c.inner.lock();
                        inner.release_holder(&member);
                        if let Some(call) = &c.call {
                            call.set_route(None);
                        }
                    }
                    touched.insert(conv);
                }
                Effect::Assigned { conv, member, kind, queue } => {
                    let Some(c) = self.conversation(&conv) else { continue };
                    let party = self.member_party(&member);
                    let role = match kind {
                        MemberKind::Bot { .. } => "bot",
                        MemberKind::Agent => "agent",
                    };
                    let mut inner = c.inner.lock();
                    // The notice of its arrival is for everyone else: the new holder gets
                    // its own `conversation.assigned`, the work item, below (one per
                    // assignment). Authored by it for delivery, so it is not sent to it.
                    let v = json!({"role": role, "name": party.name, "queue": queue});
                    inner.append(
                        &c,
                        &self.clock,
                        self.store.as_ref(),
                        NewActivity {
                            from: &Party::system(),
                            author: Author::Member(Arc::from(member.as_str())),
                            body: Body::event("conversation.assigned", &v),
                            client_key: None,
                            ack: None,
                        },
                    );
                    let conn = self.members.get(member.as_str()).map(|o| o.value().clone());
                    let outbox = conn.as_ref().map(|c| c.outbox.clone());
                    if let Some(call) = &c.call {
                        let fmt = conn.as_ref().map(|c| c.audio).unwrap_or_default();
                        let route =
                            crate::voice::Route::new(Arc::from(member.as_str()), outbox.clone(), fmt, call.caller);
                        call.set_route(Some(route));
                    }
                    let gone = outbox.is_none().then(|| self.clock.now_ms());
                    // Its work item carries everything committed; a cursor left from an
                    // earlier release would repeat part of it.
                    inner.departing.retain(|d| *d.member != *member);
                    inner.holder = Some(Holder {
                        member: Arc::from(member.as_str()),
                        party,
                        outbox: outbox.clone(),
                        gone_since_ms: gone,
                        work: None,
                    });
                    if outbox.is_some() {
                        let head = self.assigned_head(engine, &c, &inner, false);
                        inner.give_work(head, self.cfg.server.transcript_page_bytes);
                    } else {
                        inner.holder_sent = inner.committed;
                    }
                    tracing::debug!(conversation.id = %conv, member, queue, "assigned");
                    touched.insert(conv);
                }
                Effect::Position { conv, queue, position } => {
                    if let Some(c) = self.conversation(&conv)
                        && let Some(o) = &c.inner.lock().customer
                    {
                        o.send(protocol::event(
                            "queue.position",
                            json!({"queue": queue, "position": position}),
                            Some(&conv),
                        ));
                    }
                }
            }
        }
        for id in touched {
            if let Some(c) = self.conversation(&id) {
                self.persist(engine, &c);
            }
        }
    }

    /// Whether the conversation is still open (not closed).
    pub fn is_open(&self, conv: &str) -> bool {
        self.engine.lock().status(conv).is_some_and(|s| s != ConvStatus::Closed)
    }
}
