//! Example object types hosted by `verse dev` and used in the docs and tests.
//!
//! [`counter::Counter`] is the counter of GoVerse's counter sample: object type `Counter`,
//! methods `Increment`, `Decrement`, `Get` and `Reset`, each answering `CounterResponse`.
//! [`chat::ChatRoom`] (type `ChatRoom`, package `chat`) pushes posted messages to its members'
//! client sessions.

pub mod chat;
pub mod counter;
pub mod greeter;

/// The serialized `FileDescriptorSet` of the example protos (`counter`, `greeter`, `chat`),
/// written by `build.rs`; [`counter::Counter`], [`greeter::Greeter`] and [`chat::ChatRoom`]
/// register it (`#[verse::object(descriptors = …)]`), so the gateway's JSON route
/// (`POST /v1/objects/{type}/{id}/{method}`) can transcode their calls.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// Generated protobuf messages of the examples.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// Package `counter`.
    pub mod counter {
        include!(concat!(env!("OUT_DIR"), "/counter.rs"));
    }
    /// Package `chat`.
    pub mod chat {
        include!(concat!(env!("OUT_DIR"), "/chat.rs"));
    }
    /// Package `greeter`.
    pub mod greeter {
        include!(concat!(env!("OUT_DIR"), "/greeter.rs"));
    }
}

/// JSON for the example messages (`verse call`): converts between protobuf JSON and packed
/// messages by full message name.
pub mod json {
    use prost::{Message, Name};
    use verse::EncodedMessage;

    /// Why a conversion failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct JsonError(pub String);

    impl std::fmt::Display for JsonError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for JsonError {}

    fn encode<M>(json: &str) -> Result<EncodedMessage, JsonError>
    where
        M: Message + Name + serde::de::DeserializeOwned,
    {
        let message: M = serde_json::from_str(json)
            .map_err(|e| JsonError(format!("invalid JSON for {}: {e}", M::full_name())))?;
        Ok(EncodedMessage::pack(&message))
    }

    fn decode<M>(bytes: &[u8]) -> Result<String, JsonError>
    where
        M: Message + Name + Default + serde::Serialize,
    {
        let message = M::decode(bytes)
            .map_err(|e| JsonError(format!("cannot decode {}: {e}", M::full_name())))?;
        serde_json::to_string(&message).map_err(|e| JsonError(e.to_string()))
    }

    macro_rules! registry {
        ($($ty:ty),* $(,)?) => {
            /// Packs `json` as the message named `full_name` (e.g. `counter.IncrementRequest`).
            pub fn to_message(full_name: &str, json: &str) -> Result<EncodedMessage, JsonError> {
                $( if full_name == <$ty>::full_name() { return encode::<$ty>(json); } )*
                Err(JsonError(format!("unknown message {full_name}")))
            }

            /// The JSON of a packed message (by its type URL's full name).
            pub fn from_message(type_url: &str, bytes: &[u8]) -> Result<String, JsonError> {
                let full_name = type_url.rsplit('/').next().unwrap_or(type_url);
                $( if full_name == <$ty>::full_name() { return decode::<$ty>(bytes); } )*
                Err(JsonError(format!("unknown message {full_name}")))
            }
        };
    }

    use crate::proto::{chat, counter, greeter};
    registry!(
        counter::IncrementRequest,
        counter::DecrementRequest,
        counter::GetRequest,
        counter::ResetRequest,
        counter::CounterResponse,
        greeter::HelloRequest,
        greeter::HelloReply,
        chat::JoinRequest,
        chat::JoinResponse,
        chat::LeaveRequest,
        chat::LeaveResponse,
        chat::PostRequest,
        chat::PostResponse,
        chat::ListRequest,
        chat::ListResponse,
        chat::ChatMessage,
    );

    /// The request message of `method` of example type `object_type` (full name).
    pub fn request_type(object_type: &str, method: &str) -> Option<&'static str> {
        use verse::Object;
        let methods = match object_type {
            "Counter" => crate::counter::Counter::methods(),
            "Greeter" => crate::greeter::Greeter::methods(),
            "ChatRoom" => crate::chat::ChatRoom::methods(),
            _ => return None,
        };
        methods.iter().find(|m| m.name == method).map(|m| m.request_type.as_str())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use verse::Object;

    /// Every request and response message of the example types is in the descriptor set they
    /// register (but `verse.Tick`, which the gateway adds), so the gateway can transcode each
    /// of their methods.
    #[test]
    fn the_registered_descriptors_hold_every_method_message() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("build.rs writes a FileDescriptorSet");
        let names: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                let package = file.package().to_owned();
                file.message_type.iter().map(move |m| format!("{package}.{}", m.name()))
            })
            .collect();
        let tables = [
            (crate::counter::Counter::file_descriptor_set(), crate::counter::Counter::methods()),
            (crate::greeter::Greeter::file_descriptor_set(), crate::greeter::Greeter::methods()),
            (crate::chat::ChatRoom::file_descriptor_set(), crate::chat::ChatRoom::methods()),
        ];
        for (registered, methods) in tables {
            assert_eq!(registered, crate::FILE_DESCRIPTOR_SET);
            for method in methods {
                for message in [&method.request_type, &method.response_type] {
                    if message == "verse.Tick" {
                        // Verse's own timer message: the gateway knows it.
                        continue;
                    }
                    assert!(names.contains(message), "{message} of {} missing", method.name);
                }
            }
        }
    }
}
