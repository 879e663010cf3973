//! Compiles `protos/` with protox (no system protoc) into prost messages,
//! tonic gRPC clients/servers, and ttrpc service traits for the packages
//! that travel over ttrpc (shim task API, shim events).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Protobuf packages whose services are spoken over ttrpc.
const TTRPC_PACKAGES: &[&str] = &[
    "containerd.task.v2",
    "containerd.services.events.ttrpc.v1",
    "berth.shim.v1",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("protos");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=protos");

    let rel: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;
    let fds = protox::compile(&rel, [&root])?;
    // The descriptors themselves, for decoding payloads by field name
    // (event filters); see src/fieldpath.rs.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let tonic = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .service_generator();
    let mut config = prost_build::Config::new();
    config
        .enable_type_names()
        .include_file("berth_proto.rs")
        .service_generator(Box::new(Both {
            tonic,
            ttrpc: Ttrpc,
        }));
    config.compile_fds(fds)?;
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs our generator for ttrpc services and tonic's for the others.
struct Both {
    tonic: Box<dyn prost_build::ServiceGenerator>,
    ttrpc: Ttrpc,
}

impl prost_build::ServiceGenerator for Both {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        if TTRPC_PACKAGES.contains(&service.package.as_str()) {
            self.ttrpc.generate(&service, buf);
        } else {
            self.tonic.generate(service, buf);
        }
    }

    fn finalize(&mut self, buf: &mut String) {
        self.tonic.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.tonic.finalize_package(package, buf);
    }
}

/// Emits, per service: a server trait with default `Unimplemented` methods,
/// a dispatcher implementing `crate::ttrpc::Service`, and a typed client.
struct Ttrpc;

impl Ttrpc {
    fn generate(&self, s: &prost_build::Service, buf: &mut String) {
        let full = format!("{}.{}", s.package, s.proto_name);
        let module = format!("{}_ttrpc", snake(&s.name));
        let client = format!("{}Client", s.name);
        let server = format!("{}Server", s.name);
        let w = buf;
        let _ = writeln!(w, "/// ttrpc bindings for `{full}`.");
        let _ = writeln!(w, "pub mod {module} {{");
        let _ = writeln!(w, "    use crate::ttrpc::{{Context, Status}};");
        let _ = writeln!(w, "    /// Fully qualified service name on the wire.");
        let _ = writeln!(w, "    pub const SERVICE: &str = \"{full}\";");
        let _ = writeln!(
            w,
            "    /// Server side of `{full}`; every method defaults to `Unimplemented`."
        );
        let _ = writeln!(w, "    pub trait {} : Send + Sync + 'static {{", s.name);
        for m in &s.methods {
            let _ = writeln!(
                w,
                "        fn {name}(&self, _ctx: Context, _req: {input}) -> impl ::core::future::Future<Output = Result<{output}, Status>> + Send {{ async {{ Err(Status::unimplemented(\"{full}/{proto}\")) }} }}",
                name = m.name,
                input = rel(&m.input_type),
                output = rel(&m.output_type),
                proto = m.proto_name,
            );
        }
        let _ = writeln!(w, "    }}");
        let _ = writeln!(
            w,
            "    /// Adapts a [`{}`] implementation to the ttrpc server.",
            s.name
        );
        let _ = writeln!(w, "    pub struct {server}<T>(pub ::std::sync::Arc<T>);");
        let _ = writeln!(
            w,
            "    impl<T: {name}> crate::ttrpc::Service for {server}<T> {{",
            name = s.name
        );
        let _ = writeln!(w, "        fn name(&self) -> &'static str {{ SERVICE }}");
        let _ = writeln!(
            w,
            "        fn call(&self, ctx: Context, method: &str, payload: ::bytes::Bytes) -> crate::ttrpc::BoxFuture<Result<Vec<u8>, Status>> {{"
        );
        let _ = writeln!(w, "            let this = self.0.clone();");
        let _ = writeln!(w, "            match method {{");
        for m in &s.methods {
            let _ = writeln!(
                w,
                "                \"{proto}\" => Box::pin(async move {{ let req: {input} = crate::ttrpc::decode(&payload)?; let resp = this.{name}(ctx, req).await?; Ok(::prost::Message::encode_to_vec(&resp)) }}),",
                proto = m.proto_name,
                input = rel(&m.input_type),
                name = m.name,
            );
        }
        let _ = writeln!(
            w,
            "                other => {{ let m = format!(\"{full}/{{other}}\"); Box::pin(async move {{ Err(Status::unimplemented(&m)) }}) }}"
        );
        let _ = writeln!(w, "            }}");
        let _ = writeln!(w, "        }}");
        let _ = writeln!(w, "    }}");
        let _ = writeln!(w, "    /// Typed client for `{full}`.");
        let _ = writeln!(w, "    #[derive(Clone)]");
        let _ = writeln!(
            w,
            "    pub struct {client} {{ inner: crate::ttrpc::Client }}"
        );
        let _ = writeln!(w, "    impl {client} {{");
        let _ = writeln!(w, "        /// Wraps a connected ttrpc client.");
        let _ = writeln!(
            w,
            "        pub fn new(inner: crate::ttrpc::Client) -> Self {{ Self {{ inner }} }}"
        );
        let _ = writeln!(w, "        /// The underlying connection.");
        let _ = writeln!(
            w,
            "        pub fn inner(&self) -> &crate::ttrpc::Client {{ &self.inner }}"
        );
        for m in &s.methods {
            let _ = writeln!(
                w,
                "        /// Calls `{proto}`.\n        pub async fn {name}(&self, ctx: Context, req: &{input}) -> Result<{output}, Status> {{ self.inner.call(ctx, SERVICE, \"{proto}\", req).await }}",
                proto = m.proto_name,
                input = rel(&m.input_type),
                output = rel(&m.output_type),
                name = m.name,
            );
        }
        let _ = writeln!(w, "    }}");
        let _ = writeln!(w, "}}");
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Paths prost gives are relative to the package module; ours nest one deeper.
fn rel(ty: &str) -> String {
    if ty.starts_with("::") || ty.starts_with("crate::") || ty == "()" {
        ty.to_string()
    } else {
        format!("super::{ty}")
    }
}
