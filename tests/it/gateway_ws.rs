//! The gateway's WebSocket (`/v1/ws`) with a real WebSocket client (tokio-tungstenite): the
//! register frame, calls answered by replies carrying their request id (errors with GoVerse's
//! codes), pushes with sequence numbers, and resume with the token and the last acknowledged
//! sequence number (the missed push replayed, same client id; another principal refused).

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use prost::{Message as _, Name};
use prost_types::Any;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use verse_examples::proto::chat::{ChatMessage, JoinRequest, PostRequest};
use verse_examples::proto::counter::{CounterResponse, IncrementRequest};

use crate::gateway::Cluster;
use crate::gateway_http::{body_of, request};

const BOUND: Duration = Duration::from_secs(30);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(http: &str, query: &str, principal: &str) -> Result<Socket, u16> {
    let mut request = format!("ws://{http}/v1/ws{query}").into_client_request().unwrap();
    let bearer = format!("Bearer {principal}");
    request.headers_mut().insert("authorization", bearer.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("connect: {error}"),
    }
}

/// The next JSON frame (pings are answered by the client and skipped).
async fn next(socket: &mut Socket) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(BOUND, socket.next())
            .await
            .expect("a frame within the bound")
            .expect("the socket is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn send_call(socket: &mut Socket, id: u64, object: &str, method: &str, any: &Any) {
    let (object_type, object_id) = object.split_once(':').unwrap();
    let frame = serde_json::json!({ "call": {
        "id": id,
        "type": object_type,
        "objectId": object_id,
        "method": method,
        "request": STANDARD.encode(any.encode_to_vec()),
    }});
    socket.send(Message::Text(frame.to_string().into())).await.unwrap();
}

fn pack<M: prost::Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

fn decode_response<M: prost::Message + Default>(reply: &serde_json::Value) -> M {
    let encoded = reply["reply"]["response"].as_str().unwrap_or_else(|| panic!("{reply}"));
    let any = Any::decode(STANDARD.decode(encoded).unwrap().as_slice()).unwrap();
    M::decode(any.value.as_slice()).unwrap()
}

fn chat_push(frame: &serde_json::Value) -> (u64, String) {
    let push = &frame["push"];
    assert_eq!(push["type"], "type.googleapis.com/chat.ChatMessage", "{frame}");
    let any = Any::decode(STANDARD.decode(push["payload"].as_str().unwrap()).unwrap().as_slice())
        .unwrap();
    (push["seq"].as_u64().unwrap(), ChatMessage::decode(any.value.as_slice()).unwrap().text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_calls_pushes_and_resume() {
    let cluster = Cluster::start().await;
    let http = cluster.http.clone();
    let mut socket = connect(&http, "", "alice").await.unwrap();
    let register = next(&mut socket).await;
    let client_id = register["register"]["clientId"].as_str().unwrap().to_owned();
    assert!(client_id.starts_with("gw1/"), "{register}");
    assert_eq!(register["register"]["resumeToken"].as_str(), Some(client_id.as_str()));
    assert_eq!(register["register"]["resumed"], false);

    // A call: the reply carries the request id and the base64 Any response.
    send_call(&mut socket, 7, "Counter:ws1", "Increment", &pack(&IncrementRequest { amount: 3 }))
        .await;
    let reply = next(&mut socket).await;
    assert_eq!(reply["reply"]["id"], 7);
    let counter: CounterResponse = decode_response(&reply);
    assert_eq!((counter.name.as_str(), counter.value), ("ws1", 3));

    // Errors are replies with GoVerse's codes; the connection stays usable.
    socket.send(Message::Text("{nope".into())).await.unwrap();
    let reply = next(&mut socket).await;
    assert_eq!(reply["reply"]["code"], "INVALID_JSON", "{reply}");
    send_call(&mut socket, 8, "Counter:ws1", "Explode", &pack(&IncrementRequest { amount: 1 }))
        .await;
    let reply = next(&mut socket).await;
    assert_eq!(
        (reply["reply"]["id"].as_u64(), reply["reply"]["code"].as_str()),
        (Some(8), Some("OBJECT_NOT_FOUND"))
    );

    // Join the room as this session (the call carries its client id), then a post from
    // elsewhere is pushed with seq 1.
    send_call(
        &mut socket,
        9,
        "ChatRoom:wsroom",
        "Join",
        &pack(&JoinRequest { user: "alice".into() }),
    )
    .await;
    let reply = next(&mut socket).await;
    assert!(reply["reply"]["response"].is_string(), "{reply}");
    let post = |text: &str| body_of(&PostRequest { user: "bob".into(), text: text.into() });
    let path = "/api/v1/objects/call/ChatRoom/wsroom/Post";
    assert_eq!(request(&http, "POST", path, &[], &post("one")).await.status, 200);
    assert_eq!(chat_push(&next(&mut socket).await), (1, "one".to_owned()));

    // Disconnect, miss a push, reconnect with the token and the last acknowledged seq.
    socket.close(None).await.unwrap();
    drop(socket);
    assert_eq!(request(&http, "POST", path, &[], &post("two")).await.status, 200);
    let query = format!("?resume={}&last_seq=1", client_id.replace('/', "%2F"));
    // Another principal cannot take the session over.
    assert_eq!(connect(&http, &query, "mallory").await.err(), Some(403));
    let mut socket = connect(&http, &query, "alice").await.unwrap();
    let register = next(&mut socket).await;
    assert_eq!(register["register"]["clientId"].as_str(), Some(client_id.as_str()));
    assert_eq!(register["register"]["resumed"], true);
    assert_eq!(chat_push(&next(&mut socket).await), (2, "two".to_owned()));
    // The resumed connection calls and receives as before.
    assert_eq!(request(&http, "POST", path, &[], &post("three")).await.status, 200);
    assert_eq!(chat_push(&next(&mut socket).await), (3, "three".to_owned()));
    send_call(&mut socket, 10, "Counter:ws1", "Increment", &pack(&IncrementRequest { amount: 1 }))
        .await;
    let counter: CounterResponse = decode_response(&next(&mut socket).await);
    assert_eq!(counter.value, 4);

    // Stopping the gateway ends the connection.
    tokio::time::timeout(BOUND, cluster.stop()).await.expect("stops with a websocket open");
    let ended = tokio::time::timeout(BOUND, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket closes when the gateway stops");
}
