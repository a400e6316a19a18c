//! The bad-input table (S4, issue 7): every malformed or hostile input to the gateway's HTTP
//! routes and `gate.GateService`, one row each, gets its documented answer
//! (`docs/PROTOCOL.md`), and after every row another client's good calls, over HTTP and over
//! gRPC, still succeed.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::bytes::{Buf, BufMut};
use prost::{Message, Name};
use prost_types::Any;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_gateway::proto::{CallObjectRequest, DeleteObjectRequest, Empty, RegisterResponse};

use crate::gateway::Cluster;
use crate::gateway_http::{body_of, request, response_of};

fn pack<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

fn call(client_id: &str, object_type: &str, id: &str, method: &str, any: Any) -> CallObjectRequest {
    CallObjectRequest {
        client_id: client_id.into(),
        r#type: object_type.into(),
        id: id.into(),
        method: method.into(),
        request: Some(any),
    }
}

/// A codec sending raw bytes as the request message (to send what no generated client can).
#[derive(Default)]
struct RawCodec;

struct RawCoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `bytes` as the `CallObjectRequest` of `gate.GateService/CallObject`.
async fn raw_call(address: &str, bytes: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel =
        Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/gate.GateService/CallObject");
    grpc.unary(tonic::Request::new(bytes), path, RawCodec).await.map(tonic::Response::into_inner)
}

/// One row's input.
enum Input {
    /// `method path` with headers and body.
    Http { method: &'static str, path: String, headers: Vec<(&'static str, String)>, body: String },
    /// A call on a connection of its own (not the one alice registered on).
    GrpcCall(CallObjectRequest),
    /// A delete on a connection of its own.
    GrpcDelete(DeleteObjectRequest),
    /// Raw bytes as the `CallObjectRequest`.
    GrpcRaw(Vec<u8>),
}

/// One row's documented answer.
enum Answer {
    /// An HTTP error: status and GoVerse code.
    HttpError(u16, &'static str),
    /// An HTTP error whose message contains this text.
    HttpErrorSaying(u16, &'static str, &'static str),
    /// HTTP 200 with a `CounterResponse` naming this (decoded) object id.
    HttpCounter(&'static str),
    /// A gRPC status code.
    Grpc(Code),
}

struct Row {
    name: &'static str,
    input: Input,
    answer: Answer,
}

fn http(method: &'static str, path: &str, body: String) -> Input {
    Input::Http { method, path: path.to_owned(), headers: Vec::new(), body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_documented_answer_and_the_gateway_keeps_serving() {
    let cluster = Cluster::start().await;
    let address = cluster.address.clone();

    // Alice: a live session (principal "alice") on her own connection.
    let mut alice = cluster.client().await;
    let mut register = tonic::Request::new(Empty {});
    register.metadata_mut().insert("authorization", "Bearer alice".parse().unwrap());
    let mut pushes = alice.register(register).await.unwrap().into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), pushes.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let alice_id = RegisterResponse::decode(first.value.as_slice()).unwrap().client_id;

    let increment = body_of(&IncrementRequest { amount: 1 });
    let get = body_of(&GetRequest {});
    let call_path = "/api/v1/objects/call/Counter/bad/Increment";
    let any_of =
        |bytes: &[u8]| serde_json::json!({ "request": STANDARD.encode(bytes) }).to_string();
    let garbage_inner = Any { type_url: IncrementRequest::type_url(), value: vec![0xff; 3] };
    let oversized_http = any_of(&vec![7u8; 100 * 1024]);
    let oversized_grpc =
        Any { type_url: IncrementRequest::type_url(), value: vec![7u8; 100 * 1024] };
    let rows = vec![
        Row {
            name: "http: an Any that is not protobuf",
            input: http("POST", call_path, any_of(&[0xff, 0xff, 0xff])),
            answer: Answer::HttpError(400, "INVALID_PROTOBUF"),
        },
        Row {
            name: "http: an Any without a type url",
            input: http("POST", call_path, any_of(&Any::default().encode_to_vec())),
            answer: Answer::HttpError(400, "INVALID_PROTOBUF"),
        },
        Row {
            name: "http: malformed protobuf inside the Any",
            input: http("POST", call_path, any_of(&garbage_inner.encode_to_vec())),
            answer: Answer::HttpError(400, "INVALID_PARAMETERS"),
        },
        Row {
            name: "http: malformed json",
            input: http("POST", call_path, "{\"request\": ".into()),
            answer: Answer::HttpError(400, "INVALID_JSON"),
        },
        Row {
            name: "http: json without a request string",
            input: http("POST", call_path, r#"{"request": 5}"#.into()),
            answer: Answer::HttpError(400, "INVALID_BODY"),
        },
        Row {
            name: "http: malformed base64",
            input: http("POST", call_path, r#"{"request": "not*base64"}"#.into()),
            answer: Answer::HttpError(400, "INVALID_BASE64"),
        },
        Row {
            name: "http: a body over the limit",
            input: http("POST", call_path, oversized_http),
            answer: Answer::HttpError(400, "INVALID_BODY"),
        },
        Row {
            name: "http: call path missing the method",
            input: http("POST", "/api/v1/objects/call/Counter/bad", increment.clone()),
            answer: Answer::HttpError(400, "INVALID_PATH"),
        },
        Row {
            name: "http: call path with too many segments",
            input: http("POST", "/api/v1/objects/call/Counter/a/b/Get", get.clone()),
            answer: Answer::HttpError(400, "INVALID_PATH"),
        },
        Row {
            name: "http: an unknown /api route",
            input: http("POST", "/api/v1/objects/frobnicate/Counter/bad", String::new()),
            answer: Answer::HttpError(400, "INVALID_PATH"),
        },
        Row {
            name: "http: GET on the call route",
            input: http("GET", call_path, String::new()),
            answer: Answer::HttpError(405, "METHOD_NOT_ALLOWED"),
        },
        Row {
            name: "http: DELETE on the create route",
            input: http("DELETE", "/api/v1/objects/create/Counter/bad", String::new()),
            answer: Answer::HttpError(405, "METHOD_NOT_ALLOWED"),
        },
        Row {
            name: "http: POST on the event stream",
            input: http("POST", "/api/v1/events/stream", String::new()),
            answer: Answer::HttpError(405, "METHOD_NOT_ALLOWED"),
        },
        Row {
            name: "http: an unknown type",
            input: http("POST", "/api/v1/objects/call/Nope/bad/Get", get.clone()),
            answer: Answer::HttpError(404, "OBJECT_NOT_FOUND"),
        },
        Row {
            name: "http: an unknown method",
            input: http("POST", "/api/v1/objects/call/Counter/bad/Explode", get.clone()),
            answer: Answer::HttpError(404, "OBJECT_NOT_FOUND"),
        },
        Row {
            name: "http: create of an unknown type",
            input: http("POST", "/api/v1/objects/create/Nope/bad", String::new()),
            answer: Answer::HttpError(404, "OBJECT_NOT_FOUND"),
        },
        Row {
            name: "http: delete without a type",
            input: http("POST", "/api/v1/objects/delete/bad", String::new()),
            answer: Answer::HttpError(400, "INVALID_PATH"),
        },
        Row {
            name: "http: delete with an empty type segment",
            input: http("POST", "/api/v1/objects/delete//bad", String::new()),
            answer: Answer::HttpError(400, "INVALID_PARAMETERS"),
        },
        Row {
            name: "http: call with an empty id segment",
            input: http("POST", "/api/v1/objects/call/Counter//Get", get.clone()),
            answer: Answer::HttpError(400, "INVALID_PARAMETERS"),
        },
        Row {
            name: "http: an id with '/' and '#', percent-encoded",
            input: http("POST", "/api/v1/objects/call/Counter/shard%233%2Fslash/Get", get.clone()),
            answer: Answer::HttpCounter("shard#3/slash"),
        },
        Row {
            name: "http: an id with '#', percent-encoded",
            input: http("POST", "/api/v1/objects/call/Counter/a%23b/Get", get.clone()),
            answer: Answer::HttpCounter("a#b"),
        },
        Row {
            name: "http: a live session's id used by another principal",
            input: Input::Http {
                method: "POST",
                path: call_path.into(),
                headers: vec![
                    ("Authorization", "Bearer mallory".into()),
                    ("X-Client-ID", alice_id.clone()),
                ],
                body: increment.clone(),
            },
            answer: Answer::HttpError(403, "ACCESS_DENIED"),
        },
        Row {
            name: "http: an unknown X-Client-ID is served anonymously",
            input: Input::Http {
                method: "POST",
                path: "/api/v1/objects/call/Counter/anon/Get".into(),
                headers: vec![("X-Client-ID", "gw1/0123456789abcdef0123456789abcdef".into())],
                body: get.clone(),
            },
            answer: Answer::HttpCounter("anon"),
        },
        Row {
            name: "http: an unknown X-Client-ID is not a session (the room refuses the join)",
            input: Input::Http {
                method: "POST",
                path: "/api/v1/objects/call/ChatRoom/anonroom/Join".into(),
                headers: vec![("X-Client-ID", "gw1/0123456789abcdef0123456789abcdef".into())],
                body: body_of(&verse_examples::proto::chat::JoinRequest { user: "x".into() }),
            },
            answer: Answer::HttpErrorSaying(500, "CALL_FAILED", "needs a client session"),
        },
        Row {
            name: "grpc: malformed protobuf inside the Any",
            input: Input::GrpcCall(call("", "Counter", "bad", "Increment", garbage_inner.clone())),
            answer: Answer::Grpc(Code::InvalidArgument),
        },
        Row {
            name: "grpc: a CallObjectRequest that is not protobuf",
            input: Input::GrpcRaw(vec![0xff, 0xff, 0xff, 0xff]),
            answer: Answer::Grpc(Code::InvalidArgument),
        },
        Row {
            name: "grpc: a message over the limit",
            input: Input::GrpcCall(call("", "Counter", "bad", "Increment", oversized_grpc)),
            answer: Answer::Grpc(Code::OutOfRange),
        },
        Row {
            name: "grpc: no request",
            input: Input::GrpcCall(CallObjectRequest {
                request: None,
                ..call("", "Counter", "bad", "Get", pack(&GetRequest {}))
            }),
            answer: Answer::Grpc(Code::InvalidArgument),
        },
        Row {
            name: "grpc: an unknown type",
            input: Input::GrpcCall(call("", "Nope", "bad", "Get", pack(&GetRequest {}))),
            answer: Answer::Grpc(Code::NotFound),
        },
        Row {
            name: "grpc: an unknown method",
            input: Input::GrpcCall(call("", "Counter", "bad", "Explode", pack(&GetRequest {}))),
            answer: Answer::Grpc(Code::NotFound),
        },
        Row {
            name: "grpc: delete without a type",
            input: Input::GrpcDelete(DeleteObjectRequest {
                id: "bad".into(),
                r#type: String::new(),
            }),
            answer: Answer::Grpc(Code::InvalidArgument),
        },
        Row {
            name: "grpc: another connection's client id",
            input: Input::GrpcCall(call(&alice_id, "Counter", "bad", "Get", pack(&GetRequest {}))),
            answer: Answer::Grpc(Code::PermissionDenied),
        },
    ];

    let mut bystander = cluster.client().await;
    for (n, row) in rows.into_iter().enumerate() {
        let name = row.name;
        match (row.input, row.answer) {
            (Input::Http { method, path, headers, body }, answer) => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let reply = request(&cluster.http, method, &path, &headers, &body).await;
                match answer {
                    Answer::HttpError(status, code) => {
                        assert_eq!(
                            (reply.status, reply.json()["code"].as_str()),
                            (status, Some(code)),
                            "{name}: {}",
                            reply.body
                        );
                        assert!(reply.json()["error"].is_string(), "{name}: {}", reply.body);
                    }
                    Answer::HttpErrorSaying(status, code, text) => {
                        assert_eq!(
                            (reply.status, reply.json()["code"].as_str()),
                            (status, Some(code)),
                            "{name}: {}",
                            reply.body
                        );
                        let message = reply.json()["error"].as_str().unwrap().to_owned();
                        assert!(message.contains(text), "{name}: {message}");
                    }
                    Answer::HttpCounter(id) => {
                        let counter: CounterResponse = response_of(&reply);
                        assert_eq!(counter.name, id, "{name}");
                    }
                    Answer::Grpc(_) => unreachable!("{name}: an http row has an http answer"),
                }
            }
            (input, Answer::Grpc(code)) => {
                let mut client = cluster.client().await;
                let status = match input {
                    Input::GrpcCall(call) => client.call_object(call).await.map(|_| ()),
                    Input::GrpcDelete(delete) => client.delete_object(delete).await.map(|_| ()),
                    Input::GrpcRaw(bytes) => raw_call(&address, bytes).await.map(|_| ()),
                    Input::Http { .. } => unreachable!(),
                }
                .expect_err(name);
                assert_eq!(status.code(), code, "{name}: {}", status.message());
                assert!(!status.message().contains(&alice_id), "{name}: the id leaked");
            }
            (_, _) => unreachable!("{name}: a grpc row has a grpc answer"),
        }

        // Another client's good calls still succeed, over HTTP and over gRPC.
        let path = "/api/v1/objects/call/Counter/good/Increment";
        let counter: CounterResponse =
            response_of(&request(&cluster.http, "POST", path, &[], &increment).await);
        assert_eq!(counter.value, 2 * n as i32 + 1, "after {name}: http");
        let good = call("", "Counter", "good", "Increment", pack(&IncrementRequest { amount: 1 }));
        let response = bystander.call_object(good).await.unwrap().into_inner().response.unwrap();
        let counter = CounterResponse::decode(response.value.as_slice()).unwrap();
        assert_eq!(counter.value, 2 * n as i32 + 2, "after {name}: grpc");
        // Alice, whose id was used by others, still calls as herself on her connection.
        let mine = call(&alice_id, "Counter", "alice", "Get", pack(&GetRequest {}));
        alice.call_object(mine).await.unwrap();
    }
    drop(pushes);
    cluster.stop().await;
}
