//! The example chat room: push from objects to client sessions.
//!
//! A client session joins a room (`Join`, the call carries its client id), posts messages
//! (`Post`, pushed as `chat.ChatMessage` to every member) and lists the recent ones (`List`).
//! Members that can no longer be reached (their gateway is gone, or their id is not a session
//! id) are dropped from the room when a push to them fails for that reason; a full queue drops
//! only that one message for that member (at-most-once delivery).

use std::collections::{BTreeMap, VecDeque};

use verse::prelude::*;

use crate::proto::chat::{
    ChatMessage, ChatRoomState, JoinRequest, JoinResponse, LeaveRequest, LeaveResponse,
    ListRequest, ListResponse, PostRequest, PostResponse,
};

/// Messages a room keeps for `List` (older ones are forgotten).
pub const RECENT_MESSAGES: usize = 100;
/// Most members of one room.
pub const MAX_MEMBERS: usize = 1000;
/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4096;

/// `INVALID_ARGUMENT`-like method error code.
const INVALID: i32 = 3;
/// `RESOURCE_EXHAUSTED`-like method error code.
const FULL: i32 = 8;

/// A chat room: its members (client ids → display name) and recent messages.
#[derive(Debug, Default)]
pub struct ChatRoom {
    name: String,
    members: BTreeMap<String, String>,
    recent: VecDeque<ChatMessage>,
    next_seq: i64,
}

fn session_of(ctx: &CallContext) -> Result<String, MethodError> {
    ctx.caller()
        .and_then(|caller| caller.client_id.clone())
        .ok_or_else(|| MethodError::new(INVALID, "joining a chat room needs a client session"))
}

#[verse::object(descriptors = crate::FILE_DESCRIPTOR_SET)]
impl ChatRoom {
    #[init]
    fn new(id: &str) -> Self {
        ChatRoom { name: id.to_owned(), ..ChatRoom::default() }
    }

    #[snapshot]
    fn snapshot(&self) -> ChatRoomState {
        ChatRoomState { recent: self.recent.iter().cloned().collect(), next_seq: self.next_seq }
    }

    #[restore]
    fn restore(&mut self, state: ChatRoomState) {
        self.recent = state.recent.into();
        self.next_seq = state.next_seq;
    }

    /// Joins as the calling client session (idempotent: joining again renames).
    async fn join(
        &mut self,
        ctx: &CallContext,
        req: JoinRequest,
    ) -> Result<JoinResponse, MethodError> {
        let client_id = session_of(ctx)?;
        if !self.members.contains_key(&client_id) && self.members.len() >= MAX_MEMBERS {
            return Err(MethodError::new(FULL, format!("chat room {} is full", self.name)));
        }
        self.members.insert(client_id, req.user);
        Ok(JoinResponse { members: self.members.len() as i32 })
    }

    /// Leaves (the calling client session); leaving a room one is not in succeeds.
    async fn leave(
        &mut self,
        ctx: &CallContext,
        _req: LeaveRequest,
    ) -> Result<LeaveResponse, MethodError> {
        let client_id = session_of(ctx)?;
        self.members.remove(&client_id);
        Ok(LeaveResponse { members: self.members.len() as i32 })
    }

    /// Posts a message and pushes it to every member.
    async fn post(
        &mut self,
        ctx: &CallContext,
        req: PostRequest,
    ) -> Result<PostResponse, MethodError> {
        if req.text.len() > MAX_TEXT {
            return Err(MethodError::new(
                INVALID,
                format!("chat room {}: message longer than {MAX_TEXT} bytes", self.name),
            ));
        }
        let message = ChatMessage {
            room: self.name.clone(),
            user: req.user,
            text: req.text,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let failed = ctx.push_many(self.members.keys().map(String::as_str), &message);
        let delivered = self.members.len() - failed.len();
        for (client_id, error) in failed {
            if matches!(error, PushError::UnknownGateway(_) | PushError::InvalidClientId) {
                self.members.remove(&client_id);
            }
        }
        if self.recent.len() >= RECENT_MESSAGES {
            self.recent.pop_front();
        }
        let seq = message.seq;
        self.recent.push_back(message);
        Ok(PostResponse { seq, delivered: delivered as i32 })
    }

    /// The most recent messages, oldest first (at most `limit`; 0 = all kept), only those
    /// after `after_seq` when it is set.
    #[idempotent]
    async fn list(
        &mut self,
        _ctx: &CallContext,
        req: ListRequest,
    ) -> Result<ListResponse, MethodError> {
        let after = req.after_seq.unwrap_or(i64::MIN);
        let newer: Vec<&ChatMessage> = self.recent.iter().filter(|m| m.seq > after).collect();
        let keep = match usize::try_from(req.limit) {
            Ok(0) | Err(_) => newer.len(),
            Ok(limit) => limit.min(newer.len()),
        };
        let skip = newer.len() - keep;
        Ok(ListResponse { messages: newer.into_iter().skip(skip).cloned().collect() })
    }
}
