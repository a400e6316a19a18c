//! Typed local calls move messages (no encode, no decode); dynamic calls decode the request
//! once, at the object, and encode the response once. A hand-written `prost::Message` counts
//! its own encodes and decodes.

use std::sync::atomic::{AtomicUsize, Ordering};

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, skip_field, uint64};
use verse::EncodedMessage;
use verse::prelude::*;

static ENCODES: AtomicUsize = AtomicUsize::new(0);
static DECODES: AtomicUsize = AtomicUsize::new(0);

/// A message that counts how often it is encoded and decoded (its one field is never zero in
/// these tests, so each decode merges exactly one field).
#[derive(Debug, Default, Clone, PartialEq)]
struct Counted {
    value: u64,
}

impl prost::Message for Counted {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        if self.value != 0 {
            uint64::encode(1, &self.value, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            DECODES.fetch_add(1, Ordering::SeqCst);
            uint64::merge(wire_type, &mut self.value, buf, ctx)
        } else {
            skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        if self.value != 0 { uint64::encoded_len(1, &self.value) } else { 0 }
    }

    fn clear(&mut self) {
        self.value = 0;
    }
}

impl prost::Name for Counted {
    const NAME: &'static str = "Counted";
    const PACKAGE: &'static str = "test";
}

#[derive(Default)]
struct Meter;

#[verse::object]
impl Meter {
    async fn pass(&mut self, _ctx: &CallContext, req: Counted) -> Result<Counted, MethodError> {
        Ok(Counted { value: req.value + 1 })
    }
}

fn counts() -> (usize, usize) {
    (ENCODES.load(Ordering::SeqCst), DECODES.load(Ordering::SeqCst))
}

#[tokio::test]
async fn typed_calls_move_messages_and_dynamic_calls_decode_once() {
    let node = NodeBuilder::new(NodeConfig::default()).object::<Meter>().start().unwrap();
    let client = node.client();

    let before = counts();
    let reply = client.get::<Meter>("meter-1").pass(Counted { value: 1 }).await.unwrap();
    assert_eq!(reply.value, 2);
    assert_eq!(counts(), before, "a typed local call neither encodes nor decodes");

    let request = EncodedMessage::pack(&Counted { value: 5 });
    let before = counts();
    let response = client.call_encoded("Meter", "meter-1", "Pass", request).await.unwrap();
    let (encodes, decodes) = counts();
    assert_eq!(decodes - before.1, 1, "the request is decoded once, at the object");
    assert_eq!(encodes - before.0, 1, "the response is encoded once, for the dynamic caller");
    assert_eq!(response.type_url, "type.googleapis.com/test.Counted");
    assert_eq!(response.unpack::<Counted>().unwrap().value, 6);
    node.shutdown().await;
}
