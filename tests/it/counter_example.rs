//! The example counter is exactly `client-protocol.md`'s "The example counter": type `Counter`,
//! methods `Increment`, `Decrement`, `Get`, `Reset` answering `CounterResponse`, package
//! `counter`, the field numbers of GoVerse's counter sample, and `type.googleapis.com` URLs.

use prost::{Message, Name};
use verse::prelude::*;
use verse::{EncodedMessage, Object};
use verse_examples::counter::Counter;
use verse_examples::proto::counter::{
    CounterResponse, DecrementRequest, GetRequest, IncrementRequest, ResetRequest,
};

#[test]
fn messages_have_goverse_names_and_field_numbers() {
    assert_eq!(IncrementRequest { amount: 5 }.encode_to_vec(), [0x08, 0x05]);
    assert_eq!(DecrementRequest { amount: 2 }.encode_to_vec(), [0x08, 0x02]);
    assert!(GetRequest {}.encode_to_vec().is_empty());
    assert!(ResetRequest {}.encode_to_vec().is_empty());
    let response = CounterResponse { name: "c".into(), value: 3 };
    assert_eq!(response.encode_to_vec(), [0x0a, 0x01, b'c', 0x10, 0x03]);
    assert_eq!(IncrementRequest::full_name(), "counter.IncrementRequest");
    assert_eq!(CounterResponse::type_url(), "type.googleapis.com/counter.CounterResponse");
}

#[test]
fn the_counter_type_has_the_goverse_method_table() {
    assert_eq!(Counter::TYPE_NAME, "Counter");
    let methods: Vec<(&str, &str, &str)> = Counter::methods()
        .iter()
        .map(|m| (m.name, m.request_type.as_str(), m.response_type.as_str()))
        .collect();
    assert_eq!(
        methods,
        [
            ("Increment", "counter.IncrementRequest", "counter.CounterResponse"),
            ("Decrement", "counter.DecrementRequest", "counter.CounterResponse"),
            ("Get", "counter.GetRequest", "counter.CounterResponse"),
            ("Reset", "counter.ResetRequest", "counter.CounterResponse"),
        ]
    );
}

#[tokio::test]
async fn counters_start_at_zero_and_answer_with_their_name() {
    let node = NodeBuilder::new(NodeConfig::default()).object::<Counter>().start().unwrap();
    let client = node.client();
    let counter = client.get::<Counter>("Counter-test");
    assert_eq!(
        counter.get(GetRequest {}).await.unwrap(),
        CounterResponse { name: "Counter-test".into(), value: 0 }
    );
    assert_eq!(counter.increment(IncrementRequest { amount: 5 }).await.unwrap().value, 5);
    assert_eq!(counter.decrement(DecrementRequest { amount: 7 }).await.unwrap().value, -2);
    // The dynamic path, as a gateway uses it.
    let request = EncodedMessage::pack(&IncrementRequest { amount: 10 });
    let response =
        client.call_encoded("Counter", "Counter-test", "Increment", request).await.unwrap();
    assert_eq!(response.type_url, "type.googleapis.com/counter.CounterResponse");
    assert_eq!(response.unpack::<CounterResponse>().unwrap().value, 8);
    assert_eq!(counter.reset(ResetRequest {}).await.unwrap().value, 0);
    let overflow = counter.increment(IncrementRequest { amount: i32::MAX }).await.unwrap();
    assert_eq!(overflow.value, i32::MAX);
    let error = counter.increment(IncrementRequest { amount: 1 }).await.unwrap_err();
    assert!(matches!(error, CallError::Method { code: 11, .. }), "{error:?}");
    node.shutdown().await;
}
