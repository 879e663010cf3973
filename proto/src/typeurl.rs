//! `Any` packing compatible with containerd's `typeurl`.
//!
//! containerd 1.6 clients (gogo protobuf) look types up by their bare full
//! name, so we emit `containerd.events.TaskExit`, not
//! `type.googleapis.com/containerd.events.TaskExit`; on input both forms are
//! accepted.

use prost::Name;
use prost_types::Any;

/// Type URL of the OCI runtime spec, carried as JSON inside an `Any`.
pub const OCI_SPEC_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an OCI process spec (exec), carried as JSON.
pub const OCI_PROCESS_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Wraps `msg` in an `Any` whose type URL is the message's full name.
pub fn pack<M: Name>(msg: &M) -> Any {
    Any {
        type_url: M::full_name(),
        value: msg.encode_to_vec(),
    }
}

/// The full message name an `Any` carries, with any `host/` prefix removed.
pub fn type_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

/// True when `any` carries a message of type `M`.
pub fn is<M: Name>(any: &Any) -> bool {
    type_name(&any.type_url) == M::full_name()
}

/// Decodes `any` as `M`; `None` when it carries another type or bad bytes.
pub fn unpack<M: Name + Default>(any: &Any) -> Option<M> {
    if !is::<M>(any) {
        return None;
    }
    M::decode(any.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::containerd::events::TaskExit;

    #[test]
    fn bare_names_round_trip() {
        let ev = TaskExit {
            container_id: "c1".into(),
            exit_status: 3,
            ..Default::default()
        };
        let any = pack(&ev);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        assert_eq!(unpack::<TaskExit>(&any), Some(ev.clone()));
        let prefixed = Any {
            type_url: format!("type.googleapis.com/{}", any.type_url),
            value: any.value,
        };
        assert_eq!(unpack::<TaskExit>(&prefixed), Some(ev));
        assert!(unpack::<crate::pb::containerd::events::TaskOom>(&prefixed).is_none());
    }
}
