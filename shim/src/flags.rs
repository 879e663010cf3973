//! The command line containerd gives a shim (Go `flag` syntax).

/// Flags containerd passes (Go `flag` syntax: `-name value`).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub action: String,
}

/// Parses Go-style flags (`-flag value`, `--flag=value`, bools bare).
pub fn parse_flags(args: &[String]) -> std::result::Result<Flags, String> {
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let Some(name) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            if f.action.is_empty() {
                f.action = a.clone();
            }
            i += 1;
            continue;
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        match name {
            "debug" => f.debug = inline.as_deref() != Some("false"),
            "v" => f.version = true,
            _ => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("flag -{name} needs a value"))?
                    }
                };
                match name {
                    "namespace" => f.namespace = v,
                    "id" => f.id = v,
                    "address" => f.address = v,
                    "publish-binary" => f.publish_binary = v,
                    "bundle" => f.bundle = v,
                    "socket" => f.socket = v,
                    other => return Err(format!("unknown flag -{other}")),
                }
            }
        }
        i += 1;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::parse_flags;

    #[test]
    fn go_style_flags() {
        let a: Vec<String> = [
            "-namespace",
            "default",
            "-address",
            "/run/x.sock",
            "-publish-binary",
            "/bin/c",
            "-id",
            "c1",
            "-debug",
            "start",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = parse_flags(&a).unwrap();
        assert_eq!(
            (
                f.namespace.as_str(),
                f.id.as_str(),
                f.action.as_str(),
                f.debug
            ),
            ("default", "c1", "start", true)
        );
        let f = parse_flags(&["--bundle=/b".to_string(), "delete".to_string()]).unwrap();
        assert_eq!((f.bundle.as_str(), f.action.as_str()), ("/b", "delete"));
        assert!(parse_flags(&["-id".to_string()]).is_err());
        assert!(parse_flags(&["-bogus".to_string(), "x".to_string()]).is_err());
    }
}
