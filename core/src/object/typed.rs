//! [`TypedMessage`]: a protobuf message whose concrete type is erased, moved from caller to turn
//! (and back) on local calls without being encoded. A message of up to three words (most
//! messages of one or two fields: a `String`, a `Vec`, a few integers) is stored inline, so a
//! local call allocates nothing for its request and response; a larger one is boxed.
//!
//! This is a small hand-written trait object: a `'static` table of functions for the message
//! type and its storage, beside three words holding either the message or its box.

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};

use bytes::Bytes;

/// Storage: the message itself when it fits, else a `*mut M` from `Box::into_raw`.
type Slot = [MaybeUninit<usize>; 3];

/// Whether `M` is stored inline (fits the slot's size and alignment).
const fn fits<M>() -> bool {
    size_of::<M>() <= size_of::<Slot>() && align_of::<M>() <= align_of::<Slot>()
}

/// What a stored message can do. One table per message type (whose storage, inline or boxed,
/// follows from the type).
struct Vtable {
    type_id: fn() -> TypeId,
    full_name: fn() -> String,
    /// Safety: the slot holds an `M` stored by [`TypedMessage::new`].
    encode: unsafe fn(&Slot) -> Bytes,
    /// Safety: as `encode`; the message is dropped and the slot must not be used again.
    drop: unsafe fn(&mut Slot),
}

/// The table of `M`.
struct TableOf<M>(PhantomData<M>);

impl<M: prost::Message + prost::Name + Send + 'static> TableOf<M> {
    const TABLE: &'static Vtable = &Vtable {
        type_id: TypeId::of::<M>,
        full_name: M::full_name,
        encode: Self::encode,
        drop: Self::drop,
    };

    /// The stored message. Safety: the slot holds an `M` stored by [`TypedMessage::new`].
    unsafe fn get(slot: &Slot) -> &M {
        // SAFETY: by the caller's contract the slot holds `M` inline (aligned and large
        // enough, checked by `fits`) or a live `Box<M>` pointer.
        unsafe {
            if fits::<M>() {
                &*slot.as_ptr().cast::<M>()
            } else {
                &**slot.as_ptr().cast::<*mut M>()
            }
        }
    }

    unsafe fn encode(slot: &Slot) -> Bytes {
        // SAFETY: forwarded contract.
        Bytes::from(unsafe { Self::get(slot) }.encode_to_vec())
    }

    unsafe fn drop(slot: &mut Slot) {
        // SAFETY: the slot holds an `M` (or its box) that nobody reads again.
        unsafe {
            if fits::<M>() {
                slot.as_mut_ptr().cast::<M>().drop_in_place();
            } else {
                drop(Box::from_raw(slot.as_ptr().cast::<*mut M>().read()));
            }
        }
    }
}

/// A protobuf message of an erased type, inline when small (see the module documentation).
pub struct TypedMessage {
    table: &'static Vtable,
    slot: Slot,
    /// Send (every stored message is), not Sync (a stored message need not be).
    _send_only: PhantomData<Box<dyn std::any::Any + Send>>,
}

impl TypedMessage {
    /// Stores `message`.
    pub fn new<M: prost::Message + prost::Name + Send + 'static>(message: M) -> Self {
        let mut slot: Slot = [MaybeUninit::uninit(); 3];
        // SAFETY: `fits` guarantees the slot is large and aligned enough for `M`; otherwise
        // the slot (aligned for a pointer) holds the box pointer.
        unsafe {
            if fits::<M>() {
                slot.as_mut_ptr().cast::<M>().write(message);
            } else {
                slot.as_mut_ptr().cast::<*mut M>().write(Box::into_raw(Box::new(message)));
            }
        }
        TypedMessage { table: TableOf::<M>::TABLE, slot, _send_only: PhantomData }
    }

    /// Whether the message is an `M`.
    pub fn is<M: 'static>(&self) -> bool {
        (self.table.type_id)() == TypeId::of::<M>()
    }

    /// Takes the message out as `M`, or gives it back when it is another type.
    pub fn take<M: prost::Message + prost::Name + Send + 'static>(self) -> Result<M, Self> {
        if !self.is::<M>() {
            return Err(self);
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: the type id matched, so the slot holds an `M` stored by `new::<M>`, read
        // once here; `ManuallyDrop` keeps it from being dropped again.
        unsafe {
            if fits::<M>() {
                Ok(this.slot.as_ptr().cast::<M>().read())
            } else {
                Ok(*Box::from_raw(this.slot.as_ptr().cast::<*mut M>().read()))
            }
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        // SAFETY: the slot holds the message of `table` (stored by `new`).
        unsafe { (self.table.encode)(&self.slot) }
    }

    /// The message's full protobuf name.
    pub fn full_name(&self) -> String {
        (self.table.full_name)()
    }
}

impl Drop for TypedMessage {
    fn drop(&mut self) {
        // SAFETY: the slot holds the message of `table`; it is not used after this.
        unsafe { (self.table.drop)(&mut self.slot) }
    }
}

impl fmt::Debug for TypedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypedMessage({})", self.full_name())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A message that counts its drops, in a small and a large size.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Small {
        #[prost(string, tag = "1")]
        text: String,
    }
    impl prost::Name for Small {
        const NAME: &'static str = "Small";
        const PACKAGE: &'static str = "t";
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Large {
        #[prost(string, tag = "1")]
        a: String,
        #[prost(string, tag = "2")]
        b: String,
        #[prost(bytes = "vec", tag = "3")]
        c: Vec<u8>,
    }
    impl prost::Name for Large {
        const NAME: &'static str = "Large";
        const PACKAGE: &'static str = "t";
    }

    /// Counts drops of the `Arc` it holds (its strong count).
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl fmt::Debug for Tracked {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Tracked")
        }
    }
    impl Default for Tracked {
        fn default() -> Self {
            Tracked(Arc::new(AtomicUsize::new(0)))
        }
    }
    impl Clone for Tracked {
        fn clone(&self) -> Self {
            Tracked(self.0.clone())
        }
    }
    impl PartialEq for Tracked {
        fn eq(&self, _: &Self) -> bool {
            true
        }
    }
    /// A message type (hand-written `prost::Message`) whose drops are counted.
    #[derive(Debug, Clone, PartialEq)]
    struct Counted<const WORDS: usize> {
        tracked: Tracked,
        padding: [u64; WORDS],
    }
    impl<const WORDS: usize> Default for Counted<WORDS> {
        fn default() -> Self {
            Counted { tracked: Tracked::default(), padding: [0; WORDS] }
        }
    }
    impl<const WORDS: usize> prost::Message for Counted<WORDS> {
        fn encode_raw(&self, _: &mut impl bytes::BufMut) {}
        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl bytes::Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
        fn encoded_len(&self) -> usize {
            0
        }
        fn clear(&mut self) {}
    }
    impl<const WORDS: usize> prost::Name for Counted<WORDS> {
        const NAME: &'static str = "Counted";
        const PACKAGE: &'static str = "t";
    }

    #[test]
    fn small_messages_are_inline_and_large_ones_boxed() {
        assert!(fits::<Small>());
        assert!(!fits::<Large>());
        assert!(fits::<Counted<2>>());
        assert!(!fits::<Counted<3>>());
    }

    #[test]
    fn messages_come_back_out_as_their_type_only() {
        let small = Small { text: "hello".into() };
        let message = TypedMessage::new(small.clone());
        assert!(message.is::<Small>());
        assert_eq!(message.full_name(), "t.Small");
        let message = message.take::<Large>().expect_err("another type");
        assert_eq!(message.take::<Small>().expect("its type"), small);

        let large = Large { a: "a".into(), b: "b".into(), c: vec![1, 2, 3] };
        let message = TypedMessage::new(large.clone());
        assert_eq!(message.encode(), Bytes::from(prost::Message::encode_to_vec(&large)));
        let message = message.take::<Small>().expect_err("another type");
        assert_eq!(message.take::<Large>().expect("its type"), large);
    }

    fn drops_exactly_once<const WORDS: usize>() {
        let value = Counted::<WORDS>::default();
        let drops = value.tracked.0.clone();
        drop(TypedMessage::new(value.clone()));
        // The clone in the message dropped once.
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let taken = TypedMessage::new(value.clone()).take::<Counted<WORDS>>().expect("its type");
        assert_eq!(drops.load(Ordering::SeqCst), 1, "taking out does not drop");
        drop(taken);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        let refused = TypedMessage::new(value).take::<Small>().expect_err("another type");
        assert_eq!(drops.load(Ordering::SeqCst), 2, "a refused take keeps the message");
        drop(refused);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn inline_and_boxed_messages_drop_exactly_once() {
        drops_exactly_once::<0>();
        drops_exactly_once::<2>();
        drops_exactly_once::<8>();
    }
}
