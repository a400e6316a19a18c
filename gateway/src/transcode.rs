//! Protobuf JSON transcoding for the JSON route (`POST /v1/objects/{type}/{id}/{method}`), from
//! the method table and message descriptors an object type registers on its nodes
//! (`docs/PROTOCOL.md`, "JSON transcoding").
//!
//! A [`TypeSchema`] is what a node's `DescribeType` answered: the methods (wire name, request
//! and response full names, idempotence) and the type's `FileDescriptorSet`, decoded once into
//! a `prost-reflect` descriptor pool. The JSON mapping is protobuf's canonical one:
//! - requests accept the lowerCamelCase JSON names and the proto field names; unknown fields,
//!   values of the wrong type and malformed JSON are refused ([`TranscodeError::InvalidJson`]);
//!   an empty body (or only whitespace) is the empty request message;
//! - responses use lowerCamelCase names, 64-bit integers as strings, enums by name, and every
//!   field without presence (plain proto3 scalars, repeated and map fields) is emitted even at
//!   its default value (`{"name":"c1","value":0}`, never `{"name":"c1"}`); fields with presence
//!   (`optional`, message fields, oneof members) appear only when set.
//!
//! Verse's own `verse.Tick` (the request of timer methods) is added to every type's pool that
//! lacks it.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use verse_core::EncodedMessage;
use verse_core::object::TYPE_URL_PREFIX;
use verse_transport::proto::DescribeTypeResponse;

/// One method of an object type, as its node describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSchema {
    /// Wire name (`Increment`).
    pub name: String,
    /// Full name of the request message (`counter.IncrementRequest`).
    pub request_type: String,
    /// Full name of the response message.
    pub response_type: String,
    /// Safe to resend after an unknown outcome (`#[idempotent]`).
    pub idempotent: bool,
}

/// The descriptors of a type: none registered, registered but undecodable, or a pool.
#[derive(Debug, Clone)]
enum Descriptors {
    None,
    Invalid(String),
    Pool(DescriptorPool),
}

/// An object type as the gateway learnt it from a node (module docs).
#[derive(Debug, Clone)]
pub struct TypeSchema {
    object_type: String,
    methods: Vec<MethodSchema>,
    descriptors: Descriptors,
}

/// Why a JSON call cannot be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The type has no method of that name.
    #[error("unknown method {method:?} of object type {object_type:?}")]
    UnknownMethod {
        /// The object type.
        object_type: String,
        /// The method asked for.
        method: String,
    },
    /// The type registers no message descriptors, so it cannot be called with JSON.
    #[error("object type {object_type:?} registers no message descriptors (no json calls)")]
    NoDescriptors {
        /// The object type.
        object_type: String,
    },
    /// The type's registered descriptors do not decode (or do not link).
    #[error("object type {object_type:?} registers invalid message descriptors: {reason}")]
    InvalidDescriptors {
        /// The object type.
        object_type: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A message the method needs is missing from the type's descriptors.
    #[error("message {message} is missing from the descriptors of object type {object_type:?}")]
    MissingMessage {
        /// The object type.
        object_type: String,
        /// The message's full name.
        message: String,
    },
    /// The request body is not JSON, or not JSON of the request message.
    #[error("invalid json for {message}: {reason}")]
    InvalidJson {
        /// The request message's full name.
        message: String,
        /// What did not fit.
        reason: String,
    },
    /// The response does not decode as the message its type URL names.
    #[error("cannot decode the response {message}: {reason}")]
    InvalidResponse {
        /// The response message's full name.
        message: String,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Adds Verse's own `verse.Tick` (the request of timer methods, a hand-written message no
/// `.proto` of the type holds) to `pool` unless it is there, so timer methods transcode too.
fn with_tick(pool: &mut DescriptorPool) {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

    if pool.get_message_by_name("verse.Tick").is_some() {
        return;
    }
    let sequence = FieldDescriptorProto {
        name: Some("sequence".into()),
        number: Some(1),
        label: Some(Label::Optional as i32),
        r#type: Some(Type::Uint64 as i32),
        json_name: Some("sequence".into()),
        ..FieldDescriptorProto::default()
    };
    let file = FileDescriptorProto {
        name: Some("verse/tick.proto".into()),
        package: Some("verse".into()),
        message_type: vec![DescriptorProto {
            name: Some("Tick".into()),
            field: vec![sequence],
            ..DescriptorProto::default()
        }],
        syntax: Some("proto3".into()),
        ..FileDescriptorProto::default()
    };
    // A set that already has a file of that name keeps it (its timer methods do not transcode).
    if let Err(error) = pool.add_file_descriptor_proto(file) {
        tracing::debug!(%error, "verse.Tick not added to a type's descriptors");
    }
}

impl TypeSchema {
    /// A schema from a method table and a serialized `FileDescriptorSet` (empty: none).
    /// Descriptors that do not decode are kept as such: every JSON call of the type then fails
    /// with [`TranscodeError::InvalidDescriptors`].
    pub fn new(
        object_type: impl Into<String>,
        methods: Vec<MethodSchema>,
        file_descriptor_set: &[u8],
    ) -> Self {
        let descriptors = if file_descriptor_set.is_empty() {
            Descriptors::None
        } else {
            match DescriptorPool::decode(file_descriptor_set) {
                Ok(mut pool) => {
                    with_tick(&mut pool);
                    Descriptors::Pool(pool)
                }
                Err(error) => Descriptors::Invalid(error.to_string()),
            }
        };
        TypeSchema { object_type: object_type.into(), methods, descriptors }
    }

    /// The schema a node's `DescribeType` answer describes.
    pub fn from_description(description: DescribeTypeResponse) -> Self {
        let methods = description
            .methods
            .into_iter()
            .map(|m| MethodSchema {
                name: m.name,
                request_type: m.request_type,
                response_type: m.response_type,
                idempotent: m.idempotent,
            })
            .collect();
        TypeSchema::new(description.object_type, methods, &description.file_descriptor_set)
    }

    /// The object type's name.
    pub fn object_type(&self) -> &str {
        &self.object_type
    }

    /// The method table.
    pub fn methods(&self) -> &[MethodSchema] {
        &self.methods
    }

    /// Method `name`, once its request and response messages are known to be in the
    /// descriptors (so a method is never run whose answer could not be rendered).
    pub fn method(&self, name: &str) -> Result<&MethodSchema, TranscodeError> {
        let method = self.methods.iter().find(|m| m.name == name).ok_or_else(|| {
            TranscodeError::UnknownMethod {
                object_type: self.object_type.clone(),
                method: name.to_owned(),
            }
        })?;
        self.message(&method.request_type)?;
        self.message(&method.response_type)?;
        Ok(method)
    }

    fn message(&self, full_name: &str) -> Result<MessageDescriptor, TranscodeError> {
        let object_type = || self.object_type.clone();
        match &self.descriptors {
            Descriptors::None => Err(TranscodeError::NoDescriptors { object_type: object_type() }),
            Descriptors::Invalid(reason) => Err(TranscodeError::InvalidDescriptors {
                object_type: object_type(),
                reason: reason.clone(),
            }),
            Descriptors::Pool(pool) => {
                pool.get_message_by_name(full_name).ok_or_else(|| TranscodeError::MissingMessage {
                    object_type: object_type(),
                    message: full_name.to_owned(),
                })
            }
        }
    }

    /// Parses `body` (protobuf JSON; empty: the empty message) as `method`'s request and packs
    /// it as the `Any` content the call path sends.
    pub fn request_from_json(
        &self,
        method: &MethodSchema,
        body: &[u8],
    ) -> Result<EncodedMessage, TranscodeError> {
        let descriptor = self.message(&method.request_type)?;
        let invalid = |reason: String| TranscodeError::InvalidJson {
            message: method.request_type.clone(),
            reason,
        };
        let message = if body.trim_ascii().is_empty() {
            DynamicMessage::new(descriptor.clone())
        } else {
            let mut json = serde_json::Deserializer::from_slice(body);
            let message = DynamicMessage::deserialize(descriptor.clone(), &mut json)
                .map_err(|e| invalid(e.to_string()))?;
            json.end().map_err(|e| invalid(e.to_string()))?;
            message
        };
        Ok(EncodedMessage {
            type_url: format!("{TYPE_URL_PREFIX}{}", descriptor.full_name()),
            value: Bytes::from(message.encode_to_vec()),
        })
    }

    /// The protobuf JSON of a response (decoded as the message its type URL names).
    pub fn response_to_json(&self, response: &EncodedMessage) -> Result<String, TranscodeError> {
        let name = response.full_name();
        let descriptor = self.message(name)?;
        let invalid =
            |reason: String| TranscodeError::InvalidResponse { message: name.to_owned(), reason };
        let message = DynamicMessage::decode(descriptor, response.value.clone())
            .map_err(|e| invalid(e.to_string()))?;
        let options = SerializeOptions::new().skip_default_fields(false);
        let mut json = serde_json::Serializer::new(Vec::new());
        message.serialize_with_options(&mut json, &options).map_err(|e| invalid(e.to_string()))?;
        String::from_utf8(json.into_inner()).map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        OneofDescriptorProto,
    };

    use super::*;

    fn field(name: &str, number: i32, kind: Type, label: Label) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            label: Some(label as i32),
            json_name: Some(json_name(name)),
            ..FieldDescriptorProto::default()
        }
    }

    /// protoc's lowerCamelCase JSON name.
    fn json_name(name: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in name.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Package `t`: `Request { int32 amount = 1; int64 big_total = 2; repeated string tags = 3;
    /// optional string note = 4; }` and `Reply { string name = 1; int32 value = 2; uint64
    /// big_total = 3; bool done = 4; }`.
    fn descriptor_set() -> Vec<u8> {
        let mut note = field("note", 4, Type::String, Label::Optional);
        note.proto3_optional = Some(true);
        note.oneof_index = Some(0);
        let request = DescriptorProto {
            name: Some("Request".into()),
            field: vec![
                field("amount", 1, Type::Int32, Label::Optional),
                field("big_total", 2, Type::Int64, Label::Optional),
                field("tags", 3, Type::String, Label::Repeated),
                note,
            ],
            oneof_decl: vec![OneofDescriptorProto {
                name: Some("_note".into()),
                ..OneofDescriptorProto::default()
            }],
            ..DescriptorProto::default()
        };
        let reply = DescriptorProto {
            name: Some("Reply".into()),
            field: vec![
                field("name", 1, Type::String, Label::Optional),
                field("value", 2, Type::Int32, Label::Optional),
                field("big_total", 3, Type::Uint64, Label::Optional),
                field("done", 4, Type::Bool, Label::Optional),
            ],
            ..DescriptorProto::default()
        };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            message_type: vec![request, reply],
            syntax: Some("proto3".into()),
            ..FileDescriptorProto::default()
        };
        FileDescriptorSet { file: vec![file] }.encode_to_vec()
    }

    fn method(name: &str, request: &str, response: &str) -> MethodSchema {
        MethodSchema {
            name: name.into(),
            request_type: request.into(),
            response_type: response.into(),
            idempotent: false,
        }
    }

    fn schema() -> TypeSchema {
        TypeSchema::new(
            "Thing",
            vec![method("Do", "t.Request", "t.Reply"), method("Lost", "t.Gone", "t.Reply")],
            &descriptor_set(),
        )
    }

    /// The decoded request of a JSON body, as JSON of its own fields (proto names).
    fn round_trip(body: &str) -> Result<serde_json::Value, TranscodeError> {
        let schema = schema();
        let encoded = schema.request_from_json(schema.method("Do")?, body.as_bytes())?;
        assert_eq!(encoded.type_url, "type.googleapis.com/t.Request");
        let pool = DescriptorPool::decode(descriptor_set().as_slice()).unwrap();
        let descriptor = pool.get_message_by_name("t.Request").unwrap();
        let message = DynamicMessage::decode(descriptor, encoded.value).unwrap();
        let options = SerializeOptions::new().use_proto_field_name(true);
        Ok(message.serialize_with_options(serde_json::value::Serializer, &options).unwrap())
    }

    #[test]
    fn requests_accept_camel_case_and_proto_names_and_64_bit_strings() {
        let expected = serde_json::json!({"amount": 5, "big_total": "9007199254740993"});
        assert_eq!(round_trip(r#"{"amount": 5, "bigTotal": "9007199254740993"}"#), Ok(expected));
        let expected = serde_json::json!({"amount": -2, "big_total": "7", "tags": ["a", "b"]});
        assert_eq!(
            round_trip(r#"{"amount": -2, "big_total": 7, "tags": ["a", "b"]}"#),
            Ok(expected)
        );
        let expected = serde_json::json!({"note": ""});
        assert_eq!(round_trip(r#"{"note": ""}"#), Ok(expected), "optional keeps presence");
    }

    #[test]
    fn an_empty_body_is_the_empty_request() {
        assert_eq!(round_trip(""), Ok(serde_json::json!({})));
        assert_eq!(round_trip(" \r\n\t"), Ok(serde_json::json!({})));
        assert_eq!(round_trip("{}"), Ok(serde_json::json!({})));
    }

    #[test]
    fn json_that_does_not_fit_the_request_is_invalid_json() {
        for body in [
            "{nope",
            r#"{"amount": 1} trailing"#,
            r#"{"amount": "five"}"#,
            r#"{"amount": 1.5}"#,
            r#"{"amount": 4294967296}"#,
            r#"{"tags": "not a list"}"#,
            r#"{"unknown": 1}"#,
            "[1, 2]",
            "42",
        ] {
            match round_trip(body) {
                Err(TranscodeError::InvalidJson { message, .. }) => {
                    assert_eq!(message, "t.Request")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn responses_are_camel_case_with_defaults_and_64_bit_strings() {
        let schema = schema();
        let pool = DescriptorPool::decode(descriptor_set().as_slice()).unwrap();
        let descriptor = pool.get_message_by_name("t.Reply").unwrap();
        let mut reply = DynamicMessage::new(descriptor.clone());
        reply.set_field_by_name("name", prost_reflect::Value::String("c1".into()));
        reply.set_field_by_name("big_total", prost_reflect::Value::U64(u64::MAX));
        let encoded = EncodedMessage {
            type_url: "type.googleapis.com/t.Reply".into(),
            value: Bytes::from(reply.encode_to_vec()),
        };
        let json: serde_json::Value =
            serde_json::from_str(&schema.response_to_json(&encoded).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "c1", "value": 0, "bigTotal": "18446744073709551615", "done": false
            })
        );
        let garbage = EncodedMessage { value: Bytes::from_static(&[0xff, 0xff]), ..encoded };
        assert!(matches!(
            schema.response_to_json(&garbage),
            Err(TranscodeError::InvalidResponse { .. })
        ));
        let other = EncodedMessage { type_url: "type.googleapis.com/t.Nope".into(), ..garbage };
        assert!(matches!(
            schema.response_to_json(&other),
            Err(TranscodeError::MissingMessage { .. })
        ));
    }

    #[test]
    fn timer_methods_taking_verse_tick_transcode_without_a_proto_for_it() {
        let schema = TypeSchema::new(
            "Thing",
            vec![method("Tick", "verse.Tick", "t.Reply")],
            &descriptor_set(),
        );
        let tick = schema.method("Tick").unwrap();
        let encoded = schema.request_from_json(tick, br#"{"sequence": "3"}"#).unwrap();
        assert_eq!(encoded.type_url, "type.googleapis.com/verse.Tick");
        assert_eq!(encoded.value.as_ref(), verse_core::Tick { sequence: 3 }.encode_to_vec());
    }

    #[test]
    fn methods_need_a_known_name_and_both_messages_in_the_descriptors() {
        let schema = schema();
        assert_eq!(schema.method("Do").map(|m| m.request_type.as_str()), Ok("t.Request"));
        assert_eq!(
            schema.method("Nope").unwrap_err(),
            TranscodeError::UnknownMethod { object_type: "Thing".into(), method: "Nope".into() }
        );
        assert_eq!(
            schema.method("Lost").unwrap_err(),
            TranscodeError::MissingMessage {
                object_type: "Thing".into(),
                message: "t.Gone".into()
            }
        );
        let bare = TypeSchema::new("Bare", vec![method("Do", "t.Request", "t.Reply")], &[]);
        assert_eq!(
            bare.method("Do").unwrap_err(),
            TranscodeError::NoDescriptors { object_type: "Bare".into() }
        );
        let broken =
            TypeSchema::new("Broken", vec![method("Do", "t.Request", "t.Reply")], &[0xff, 0x01]);
        assert!(matches!(
            broken.method("Do"),
            Err(TranscodeError::InvalidDescriptors { object_type, .. }) if object_type == "Broken"
        ));
    }
}
