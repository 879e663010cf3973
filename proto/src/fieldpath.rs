//! Field paths into protobuf payloads carried as `Any`, for filters such as
//! `event.container_id==web` on `Events.Subscribe` (containerd decodes each
//! envelope's event and matches its fields the same way).
//!
//! Payloads are decoded by the descriptors of our own `.proto` files,
//! embedded at build time, so every message berth defines is covered and
//! new ones need no code here.

use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value};
use prost_types::Any;
use std::sync::OnceLock;

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))[..])
            .map_err(|e| tracing::error!("embedded protobuf descriptors: {e}"))
            .ok()
    })
    .as_ref()
}

/// The value at `path` inside the message `any` carries, as filters compare
/// it: a string as is, a number or bool in decimal/`true`/`false`, an enum
/// by its name; `labels.<key>` (any `map<string, string>`) by key. `None`
/// when the type is unknown, the bytes do not decode, or the path names no
/// set scalar.
pub fn any_field(any: &Any, path: &[String]) -> Option<String> {
    let name = crate::typeurl::type_name(&any.type_url);
    let desc = pool()?.get_message_by_name(name)?;
    let msg = DynamicMessage::decode(desc, any.value.as_slice()).ok()?;
    message_field(&msg, path)
}

/// The message `any` carries as a JSON object with protobuf field names,
/// every field present (defaults too, so consumers see stable types),
/// 64-bit integers as JSON numbers (not the proto3 mapping's strings) and
/// timestamps in RFC 3339. `None` when the type is unknown or the bytes do
/// not decode (or a nested `Any` holds an unknown type).
pub fn any_json(any: &Any) -> Option<serde_json::Value> {
    let name = crate::typeurl::type_name(&any.type_url);
    let desc = pool()?.get_message_by_name(name)?;
    let msg = DynamicMessage::decode(desc, any.value.as_slice()).ok()?;
    let opts = prost_reflect::SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(false);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .ok()
}

fn message_field(msg: &DynamicMessage, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let field = msg.descriptor().get_field_by_name(first)?;
    if !msg.has_field(&field) {
        return None;
    }
    let value = msg.get_field(&field);
    match (value.as_ref(), rest) {
        (Value::Message(m), rest) if !rest.is_empty() => message_field(m, rest),
        (Value::Map(map), [key]) => match map.get(&MapKey::String(key.clone()))? {
            Value::String(s) => Some(s.clone()),
            other => scalar(other, &field),
        },
        (v, []) => scalar(v, &field),
        _ => None,
    }
}

fn scalar(v: &Value, field: &prost_reflect::FieldDescriptor) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::EnumNumber(n) => match field.kind() {
            prost_reflect::Kind::Enum(e) => e.get_value(*n)?.name().to_string(),
            _ => n.to_string(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::containerd::events::{ContainerCreate, TaskExit, container_create};

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(String::from).collect()
    }

    #[test]
    fn reads_strings_numbers_nested_fields_and_labels() {
        let exit = crate::typeurl::pack(&TaskExit {
            container_id: "web".into(),
            id: "web".into(),
            pid: 42,
            exit_status: 3,
            exited_at: None,
        });
        assert_eq!(
            any_field(&exit, &path("container_id")).as_deref(),
            Some("web")
        );
        assert_eq!(any_field(&exit, &path("exit_status")).as_deref(), Some("3"));
        assert_eq!(any_field(&exit, &path("exited_at")), None);
        assert_eq!(any_field(&exit, &path("no_such_field")), None);

        let create = crate::typeurl::pack(&ContainerCreate {
            id: "c1".into(),
            image: "busybox".into(),
            runtime: Some(container_create::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
        });
        assert_eq!(
            any_field(&create, &path("runtime.name")).as_deref(),
            Some("io.containerd.runc.v2")
        );
        // A bare name and a type.googleapis.com/ URL both resolve.
        let mut url = create.clone();
        url.type_url = format!("type.googleapis.com/{}", create.type_url);
        assert_eq!(any_field(&url, &path("image")).as_deref(), Some("busybox"));
        let unknown = Any {
            type_url: "example.Unknown".into(),
            value: vec![],
        };
        assert_eq!(any_field(&unknown, &path("id")), None);
    }

    #[test]
    fn payloads_as_typed_json() {
        let exit = crate::typeurl::pack(&TaskExit {
            container_id: "web".into(),
            id: "web".into(),
            pid: 42,
            exit_status: 3,
            exited_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
        });
        let v = any_json(&exit).unwrap();
        assert_eq!(v["container_id"], "web");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["exit_status"], 3);
        assert_eq!(v["exited_at"], "2023-11-14T22:13:20.000000005Z");
        let prep = crate::typeurl::pack(&crate::pb::containerd::events::SnapshotPrepare {
            key: "j2".into(),
            parent: String::new(),
            snapshotter: "overlayfs".into(),
        });
        let v = any_json(&prep).unwrap();
        assert_eq!(v["key"], "j2");
        // Defaults are present: a consumer sees every field's type.
        assert_eq!(v["parent"], "");
        let unknown = Any {
            type_url: "example.Unknown".into(),
            value: vec![],
        };
        assert_eq!(any_json(&unknown), None);
    }

    #[test]
    fn reads_map_labels() {
        let ns = crate::typeurl::pack(&crate::pb::containerd::events::NamespaceCreate {
            name: "team".into(),
            labels: [("owner".to_string(), "ops".to_string())].into(),
        });
        assert_eq!(
            any_field(&ns, &path("labels.owner")).as_deref(),
            Some("ops")
        );
        assert_eq!(any_field(&ns, &path("labels.nope")), None);
    }
}
