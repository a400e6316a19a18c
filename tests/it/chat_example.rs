//! The example chat room pushes posted messages to its members through the node's push sink
//! (`verse-transport`'s `PushHub`), buffers for a gateway whose stream is not open yet, and
//! drops members that cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use verse::prelude::*;
use verse::{CallerIdentity, EncodedMessage};
use verse_examples::chat::ChatRoom;
use verse_examples::proto::chat::{
    ChatMessage, JoinRequest, LeaveRequest, ListRequest, PostRequest,
};
use verse_transport::PushHub;

fn as_client(node: &Node, client_id: &str) -> Client {
    node.client().with_identity(CallerIdentity {
        client_id: Some(client_id.to_owned()),
        ..CallerIdentity::default()
    })
}

#[tokio::test]
async fn posts_reach_every_member_as_pushes() {
    let hub = PushHub::new(16);
    let node = NodeBuilder::new(NodeConfig::default())
        .object::<ChatRoom>()
        .push_sink(Arc::new(hub.clone()))
        .start()
        .expect("node");
    let mut gateway = hub.register("gw").expect("stream");
    let alice = as_client(&node, "gw/alice-session");
    let bob = as_client(&node, "gw/bob-session");
    let room = "room-1";
    assert_eq!(
        alice
            .get::<ChatRoom>(room)
            .join(JoinRequest { user: "alice".into() })
            .await
            .unwrap()
            .members,
        1
    );
    assert_eq!(
        bob.get::<ChatRoom>(room).join(JoinRequest { user: "bob".into() }).await.unwrap().members,
        2
    );
    // An id without a session part cannot be pushed to: the room drops it on the next post.
    as_client(&node, "broken")
        .get::<ChatRoom>(room)
        .join(JoinRequest { user: "x".into() })
        .await
        .unwrap();

    let posted = alice
        .get::<ChatRoom>(room)
        .post(PostRequest { user: "alice".into(), text: "hello".into() })
        .await
        .unwrap();
    assert_eq!((posted.seq, posted.delivered), (0, 2));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let push = tokio::time::timeout(Duration::from_secs(10), gateway.next())
            .await
            .expect("a push within 10 s")
            .expect("stream open");
        assert_eq!((push.object_type.as_str(), push.object_id.as_str()), ("ChatRoom", room));
        let payload = push.message.expect("payload");
        assert_eq!(payload.type_url, "type.googleapis.com/chat.ChatMessage");
        let message = ChatMessage::decode(payload.value).expect("ChatMessage");
        assert_eq!((message.user.as_str(), message.text.as_str()), ("alice", "hello"));
        seen.push(push.client_id);
    }
    seen.sort();
    assert_eq!(seen, ["gw/alice-session", "gw/bob-session"]);

    // The broken member is gone; bob leaves; a second post reaches alice only.
    bob.get::<ChatRoom>(room).leave(LeaveRequest {}).await.unwrap();
    let posted = bob
        .get::<ChatRoom>(room)
        .post(PostRequest { user: "bob".into(), text: "bye".into() })
        .await
        .unwrap();
    assert_eq!((posted.seq, posted.delivered), (1, 1));
    let push = gateway.next().await.expect("push");
    assert_eq!(push.client_id, "gw/alice-session");

    let listed = node
        .client()
        .get::<ChatRoom>(room)
        .list(ListRequest { limit: 1, after_seq: None })
        .await
        .unwrap();
    assert_eq!(listed.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["bye"]);
    let all = node.client().get::<ChatRoom>(room).list(ListRequest::default()).await.unwrap();
    assert_eq!(all.messages.len(), 2);
    let after = ListRequest { limit: 0, after_seq: Some(0) };
    let newer = node.client().get::<ChatRoom>(room).list(after).await.unwrap();
    assert_eq!(newer.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1], "after seq 0");
    node.shutdown().await;
}

#[tokio::test]
async fn joining_needs_a_session_and_pushes_wait_for_the_gateway_stream() {
    let hub = PushHub::new(16);
    let node = NodeBuilder::new(NodeConfig::default())
        .object::<ChatRoom>()
        .push_sink(Arc::new(hub.clone()))
        .start()
        .expect("node");
    let error = node.client().get::<ChatRoom>("r").join(JoinRequest::default()).await.unwrap_err();
    assert!(matches!(error, CallError::Method { code: 3, .. }), "{error:?}");
    // No view on an unclustered node: the hub buffers for the gateway until it opens a stream.
    let carol = as_client(&node, "gw2/carol");
    carol.get::<ChatRoom>("r").join(JoinRequest { user: "carol".into() }).await.unwrap();
    let request = EncodedMessage::pack(&PostRequest { user: "carol".into(), text: "early".into() });
    node.client().call_encoded("ChatRoom", "r", "Post", request).await.unwrap();
    assert_eq!(hub.pending(), 1);
    let mut stream = hub.register("gw2").expect("stream");
    let push = stream.next().await.expect("the buffered push");
    assert_eq!(push.client_id, "gw2/carol");
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_push_sink_reports_it() {
    let node = NodeBuilder::new(NodeConfig::default()).object::<ChatRoom>().start().expect("node");
    let member = as_client(&node, "gw/s");
    member.get::<ChatRoom>("r").join(JoinRequest { user: "u".into() }).await.unwrap();
    let posted = member
        .get::<ChatRoom>("r")
        .post(PostRequest { user: "u".into(), text: "t".into() })
        .await
        .unwrap();
    assert_eq!(posted.delivered, 0, "NoSink is not a reason to drop the member");
    let again = member
        .get::<ChatRoom>("r")
        .post(PostRequest { user: "u".into(), text: "t".into() })
        .await
        .unwrap();
    assert_eq!(again.seq, 1);
    node.shutdown().await;
}
