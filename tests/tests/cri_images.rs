//! The CRI ImageService of berthd, driven by the generated tonic client as
//! the kubelet drives it: pulls through a `hosts.toml` mirror (a
//! `registry.k8s.io/…` name served by a local docker-registry), with basic
//! and token auth, list/status/remove/ImageFsInfo, what a missing image
//! answers, and that a failed pull leaves no image. Unpacking needs root.

use berth_proto::cri::image_service_client::ImageServiceClient;
use berth_proto::cri::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use berth_tests::registry::{Registry, TokenServer};
use berth_tests::*;
use std::path::Path;
use tonic::Code;
use tonic::transport::Channel;

#[path = "support/cri_images.rs"]
mod support;
use support::{tls_files, user_image};

type Client = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn peers() -> Option<std::path::PathBuf> {
    let reg = peer("docker-registry")?;
    if !require_root("pulling unpacks into overlay snapshots (mounts)") {
        return None;
    }
    Some(reg)
}

/// Busybox pushed to `remote` with berthctl (credentials `user` if given).
fn push_busybox(d: &Daemon, remote: &str, user: Option<&str>) {
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    ok(
        "tag",
        d.berthctl("default", &["images", "tag", "busybox", remote]),
    );
    let mut args = vec!["images", "push"];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.push(remote);
    ok("push", d.berthctl("default", &args));
}

/// A berthd whose `[registry] config_path` is `hosts` (no retries, so
/// that an unreachable upstream fails at once).
fn daemon_with_hosts(hosts: &Path) -> Daemon {
    Daemon::start_with_config(&format!(
        "[registry]\nconfig_path = \"{}\"\nretries = 0\nconnect_timeout_secs = 2\n",
        hosts.display()
    ))
}

/// `<hosts>/<registry>/hosts.toml` sending `registry` to the local `mirror`.
fn mirror(hosts: &Path, registry: &str, mirror: &str) {
    let dir = hosts.join(registry);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{registry}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

async fn client(d: &Daemon) -> Client {
    ImageServiceClient::new(d.channel().await)
}

async fn pull(
    c: &mut Client,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

async fn status(c: &mut Client, image: &str) -> Option<berth_proto::cri::Image> {
    c.image_status(ImageStatusRequest {
        image: spec(image),
        verbose: false,
    })
    .await
    .expect("ImageStatus")
    .into_inner()
    .image
}

async fn list(c: &mut Client) -> Vec<berth_proto::cri::Image> {
    c.list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn remove(c: &mut Client, image: &str) {
    c.remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e}"));
}

fn k8s_image_names(d: &Daemon) -> Vec<String> {
    ok("images ls", d.berthctl("k8s.io", &["images", "ls", "-q"]))
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn pull_through_a_mirror_list_status_remove() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let hosts = tempfile::tempdir().unwrap();
    mirror(hosts.path(), "registry.k8s.io", &reg.host());
    let d = daemon_with_hosts(hosts.path());
    push_busybox(&d, &format!("{}/foo:1", reg.host()), None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&d).await;
        assert!(list(&mut c).await.is_empty(), "nothing in k8s.io yet");
        let id = pull(&mut c, "registry.k8s.io/foo:1", None)
            .await
            .unwrap_or_else(|e| panic!("pull through the mirror: {e}\n{}", d.log()));
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        // The mirror was asked, with the registry's name as ns= (as containerd sends).
        assert!(reg.log().contains("ns=registry.k8s.io"), "{}", reg.log());

        let images = list(&mut c).await;
        assert_eq!(images.len(), 1, "{images:?}");
        let img = &images[0];
        assert_eq!(img.id, id);
        assert_eq!(img.repo_tags, vec!["registry.k8s.io/foo:1".to_string()]);
        assert_eq!(img.repo_digests.len(), 1, "{img:?}");
        let repo_digest = img.repo_digests[0].clone();
        assert!(
            repo_digest.starts_with("registry.k8s.io/foo@sha256:"),
            "{repo_digest}"
        );
        // Busybox's config names no user; its compressed layer is ~2 MB.
        assert!(img.size > 500_000, "{img:?}");
        assert!(img.uid.is_none() && img.username.is_empty(), "{img:?}");
        assert!(!img.pinned);

        // ImageStatus by tag, id, repo digest and a short id.
        for name in [
            "registry.k8s.io/foo:1",
            id.as_str(),
            repo_digest.as_str(),
            &id[7..19],
        ] {
            let s = status(&mut c, name).await;
            assert_eq!(
                s.as_ref().map(|i| i.id.as_str()),
                Some(id.as_str()),
                "{name}"
            );
        }
        let verbose = c
            .image_status(ImageStatusRequest {
                image: spec(&id),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
        assert!(
            info["chainID"].as_str().unwrap().starts_with("sha256:"),
            "{info}"
        );
        assert_eq!(info["imageSpec"]["rootfs"]["type"], "layers", "{info}");
        // The filter names one image.
        let filtered = c
            .list_images(ListImagesRequest {
                filter: Some(ImageFilter {
                    image: spec("registry.k8s.io/foo:1"),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(filtered.len(), 1);
        let none = c
            .list_images(ListImagesRequest {
                filter: Some(ImageFilter {
                    image: spec("registry.k8s.io/other:1"),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert!(none.is_empty(), "{none:?}");

        // Tag, digest and id records, as containerd's CRI makes them.
        let mut names = k8s_image_names(&d);
        names.sort();
        let mut want = vec![
            id.clone(),
            repo_digest.clone(),
            "registry.k8s.io/foo:1".into(),
        ];
        want.sort();
        assert_eq!(names, want);
        if let Some(ctr) = peer("ctr") {
            let out = ok("ctr images ls", d.ctr(&ctr, "k8s.io", &["images", "ls"]));
            assert!(out.contains("io.cri-containerd.image=managed"), "{out}");
            assert!(out.contains("registry.k8s.io/foo:1"), "{out}");
        }

        let fs = c
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let u = &fs.image_filesystems[0];
        assert!(u.used_bytes.unwrap().value > 1_000_000, "{u:?}");
        assert!(u.inodes_used.unwrap().value > 100, "{u:?}");
        let mp = u.fs_id.as_ref().unwrap().mountpoint.clone();
        assert_eq!(Path::new(&mp), d.root().join("snapshots/overlayfs"));
        assert!(u.timestamp > 0);

        // Missing images: an empty status, and removal succeeds.
        assert!(status(&mut c, "docker.io/library/nope:1").await.is_none());
        let zero = format!("sha256:{}", "0".repeat(64));
        assert!(status(&mut c, &zero).await.is_none());
        remove(&mut c, "docker.io/library/nope:1").await;

        // Pulling again is idempotent; the same id.
        assert_eq!(
            pull(&mut c, "registry.k8s.io/foo:1", None).await.unwrap(),
            id
        );
        assert_eq!(list(&mut c).await.len(), 1);

        // Removing by any name removes every record and the snapshots.
        remove(&mut c, &id[7..19]).await;
        assert!(list(&mut c).await.is_empty());
        assert!(status(&mut c, "registry.k8s.io/foo:1").await.is_none());
        assert!(k8s_image_names(&d).is_empty());
        remove(&mut c, &id).await;
        let after = c
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(after.image_filesystems[0].used_bytes.unwrap().value, 0);

        // By digest: a `pull` host serves it; the digest is its only name.
        assert_eq!(pull(&mut c, &repo_digest, None).await.unwrap(), id);
        let images = list(&mut c).await;
        assert!(images[0].repo_tags.is_empty(), "{images:?}");
        assert_eq!(images[0].repo_digests, vec![repo_digest.clone()]);
        remove(&mut c, &repo_digest).await;
        assert!(k8s_image_names(&d).is_empty());

        // The mirror serves the transfer service's pulls too.
        ok(
            "berthctl pull through the mirror",
            d.berthctl("default", &["images", "pull", "registry.k8s.io/foo:1"]),
        );
    });
}

#[test]
fn failures_leave_nothing_behind() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let hosts = tempfile::tempdir().unwrap();
    mirror(hosts.path(), "registry.k8s.io", &reg.host());
    let d = daemon_with_hosts(hosts.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&d).await;
        for bad in ["Not A Ref", "busybox@sha256:12", ""] {
            let e = pull(&mut c, bad, None).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
        }
        // Neither the mirror (404) nor the registry (unreachable offline)
        // has it: an error naming both, and no image.
        let e = pull(&mut c, "registry.k8s.io/missing:1", None)
            .await
            .unwrap_err();
        assert!(e.message().contains(&reg.host()), "{e}");
        assert!(e.message().contains("registry.k8s.io"), "{e}");
        eprintln!("missing image: {e}");
        assert!(list(&mut c).await.is_empty());
        assert!(k8s_image_names(&d).is_empty());
        let e = c
            .image_status(ImageStatusRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    });
}

#[test]
fn pulls_with_basic_auth() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start_with_auth(&reg_bin, "berth", "s3cret-pw");
    let d = Daemon::start();
    let remote = format!("{}/private:1", reg.host());
    push_busybox(&d, &remote, Some("berth:s3cret-pw"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&d).await;
        let e = pull(&mut c, &remote, None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        let wrong = AuthConfig {
            username: "berth".into(),
            password: "wrong".into(),
            ..Default::default()
        };
        let e = pull(&mut c, &remote, Some(wrong)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        assert!(!e.message().contains("wrong"), "no secret in errors: {e}");
        assert!(list(&mut c).await.is_empty());

        let right = AuthConfig {
            username: "berth".into(),
            password: "s3cret-pw".into(),
            ..Default::default()
        };
        let id = pull(&mut c, &remote, Some(right))
            .await
            .expect("pull with a password");
        remove(&mut c, &id).await;
        // `auth` is base64 user:password; server_address limits it to a host.
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode("berth:s3cret-pw");
        let elsewhere = AuthConfig {
            auth: encoded.clone(),
            server_address: "https://other.example".into(),
            ..Default::default()
        };
        let e = pull(&mut c, &remote, Some(elsewhere)).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "credentials for another host unused: {e}"
        );
        let auth = AuthConfig {
            auth: encoded,
            server_address: reg.host(),
            ..Default::default()
        };
        assert_eq!(
            pull(&mut c, &remote, Some(auth))
                .await
                .expect("pull with auth"),
            id
        );
        assert!(!d.log().contains("s3cret-pw"), "secrets never logged");
        let refused = AuthConfig {
            identity_token: "tok".into(),
            ..Default::default()
        };
        let e = pull(&mut c, &remote, Some(refused)).await.unwrap_err();
        assert!(e.message().contains("identity_token"), "{e}");
    });
}

#[test]
fn pulls_with_token_auth() {
    let Some(reg_bin) = peers() else { return };
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let tokens = TokenServer::start(&openssl, "berth", "t0ken-pw");
    let reg = Registry::start_with_token(&reg_bin, &tokens);
    let d = Daemon::start();
    let remote = format!("{}/team/bb:1", reg.host());
    push_busybox(&d, &remote, Some("berth:t0ken-pw"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&d).await;
        let auth = AuthConfig {
            username: "berth".into(),
            password: "t0ken-pw".into(),
            ..Default::default()
        };
        let id = pull(&mut c, &remote, Some(auth))
            .await
            .expect("pull with a token");
        assert!(
            tokens.grants().iter().any(|g| g.account == "berth"
                && g.granted.iter().any(|s| s == "repository:team/bb:pull")),
            "the pull ran on berth's token: {:?}",
            tokens.grants()
        );
        assert_eq!(status(&mut c, &remote).await.map(|i| i.id), Some(id));
    });
}

#[test]
fn users_and_sizes_of_a_multi_platform_image() {
    let Some(reg_bin) = peers() else { return };
    let reg = Registry::start(&reg_bin);
    let d = Daemon::start();
    let mut sizes = Vec::new();
    for (repo, user) in [("numeric", "1234:5"), ("named", "www-data")] {
        let (tar, size) = user_image(user);
        let path = d.dir.path().join(format!("{repo}.tar"));
        std::fs::write(&path, tar).unwrap();
        let base = format!("{}/{repo}", reg.host());
        d.import(&path, &["--base-name", &base]);
        ok(
            "push",
            d.berthctl("default", &["images", "push", &format!("{base}:1")]),
        );
        sizes.push(size);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&d).await;
        let numeric = format!("{}/numeric:1", reg.host());
        pull(&mut c, &numeric, None).await.expect("pull numeric");
        let i = status(&mut c, &numeric).await.expect("numeric");
        assert_eq!(i.uid.map(|u| u.value), Some(1234), "{i:?}");
        assert!(i.username.is_empty(), "{i:?}");
        // Index, this host's manifest, config and layer; not the other platform's.
        assert_eq!(i.size, sizes[0], "{i:?}");
        let named = format!("{}/named:1", reg.host());
        pull(&mut c, &named, None).await.expect("pull named");
        let i = status(&mut c, &named).await.expect("named");
        assert!(i.uid.is_none(), "{i:?}");
        assert_eq!(i.username, "www-data");
        assert_eq!(list(&mut c).await.len(), 2);
    });
}

#[test]
fn mirrors_in_order_with_ca_and_skip_verify() {
    let Some(reg_bin) = peers() else { return };
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let tls = tempfile::tempdir().unwrap();
    tls_files(&openssl, tls.path());
    let reg = Registry::start_with_tls(
        &reg_bin,
        &tls.path().join("cert.pem"),
        &tls.path().join("key.pem"),
    );
    let hosts = tempfile::tempdir().unwrap();
    let write = |registry: &str, text: String| {
        let dir = hosts.path().join(registry);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), text).unwrap();
    };
    // A dead mirror first, then the TLS one trusted through a CA file
    // named relative to the directory.
    std::fs::create_dir_all(hosts.path().join("registry.k8s.io")).unwrap();
    std::fs::copy(
        tls.path().join("ca.pem"),
        hosts.path().join("registry.k8s.io/ca.pem"),
    )
    .unwrap();
    let h = reg.host();
    write(
        "registry.k8s.io",
        format!(
            "server = \"https://registry.k8s.io\"\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"ca.pem\"\n"
        ),
    );
    write(
        "quay.io",
        format!(
            "[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
        ),
    );
    write(
        "example.com",
        format!("[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    );
    let d = daemon_with_hosts(hosts.path());
    d.import(&fixtures().join("busybox-docker.tar"), &[]);
    let remote = format!("{h}/tls:1");
    ok(
        "tag",
        d.berthctl("default", &["images", "tag", "busybox", &remote]),
    );
    let ca = tls.path().join("ca.pem");
    ok(
        "push",
        d.berthctl(
            "default",
            &["images", "push", "--ca-file", ca.to_str().unwrap(), &remote],
        ),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&d).await;
        let id = pull(&mut c, "registry.k8s.io/tls:1", None)
            .await
            .unwrap_or_else(|e| panic!("dead mirror skipped, CA trusted: {e}"));
        let skip = pull(&mut c, "quay.io/tls:1", None)
            .await
            .unwrap_or_else(|e| panic!("skip_verify: {e}"));
        assert_eq!(skip, id);
        // Neither a CA nor skip_verify: the certificate is refused.
        let e = pull(&mut c, "example.com/tls:1", None).await.unwrap_err();
        assert!(e.message().contains(&h), "{e}");
        assert!(e.message().contains("certificate"), "{e}");
        // The dead mirror was tried, and passed over.
        assert!(d.log().contains("127.0.0.1:1"), "{}", d.log());
        let tags: Vec<String> = list(&mut c)
            .await
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect();
        assert_eq!(
            tags,
            vec!["quay.io/tls:1".to_string(), "registry.k8s.io/tls:1".into()]
        );
    });
}
