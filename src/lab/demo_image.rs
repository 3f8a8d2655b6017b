//! Images built locally with no network: a root filesystem of Debian's
//! static busybox (`busybox-static`) given to the Docker engine's import
//! (`docker import`), and saved as `docker save` tarballs. The demo lab's
//! role images are such a filesystem plus `demo-role.sh`, which logs the role
//! file it reads and keeps running; the tests build their images with the
//! same functions.

use std::path::Path;

use anyhow::Context as _;
use bollard::Docker;
use futures::StreamExt as _;

/// Where the static busybox is.
pub const BUSYBOX: &str = "/bin/busybox";

/// The demo containers' program (busybox `sh`), at `/bin/server-manager-demo`
/// in the image.
pub const DEMO_SCRIPT: &str = include_str!("demo-role.sh");

/// Whether `path` is a statically linked ELF executable (no program
/// interpreter): Debian's `busybox` package installs a dynamic one at the
/// same path, which cannot run in an image without a C library.
pub fn is_static_executable(path: &Path) -> anyhow::Result<bool> {
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data)
        .map_err(|e| anyhow::anyhow!("{} is not a 64-bit ELF executable: {e}", path.display()))?;
    let endian = header
        .endian()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let headers = header
        .program_headers(endian, &*data)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(!headers
        .iter()
        .any(|h| h.p_type(endian) == object::elf::PT_INTERP))
}

/// Writes a minimal root filesystem into `dir`: the static busybox with a
/// link for each of its applets in `/bin`, and empty `/etc`, `/tmp`,
/// `/var/log`, `/etc/contrailctl`.
pub fn busybox_rootfs(dir: &Path) -> anyhow::Result<()> {
    for sub in ["bin", "etc", "tmp", "var/log", "etc/contrailctl"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))
        .with_context(|| format!("cannot copy {BUSYBOX} (Debian package busybox-static)"))?;
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("cannot run {BUSYBOX} --list"))?;
    anyhow::ensure!(list.status.success(), "{BUSYBOX} --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    Ok(())
}

/// A tar archive of `dir` (for [`import`]).
pub fn tar_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    Ok(builder.into_inner()?)
}

/// `docker import`: creates image `tag` from the root filesystem `rootfs`
/// (a tar archive), with Dockerfile instructions `changes` (`CMD …`, `ENV …`).
pub async fn import(
    docker: &Docker,
    rootfs: Vec<u8>,
    tag: &str,
    changes: &[String],
) -> anyhow::Result<()> {
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(changes.to_vec())
        .build();
    let mut stream =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("docker import of {tag} failed"))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            anyhow::bail!("docker import of {tag} failed: {e}");
        }
    }
    Ok(())
}

/// `docker save -o path tag`, written to a temporary file renamed into place.
pub async fn save(docker: &Docker, tag: &str, path: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let partial = path.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut stream = docker.export_image(tag);
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk.with_context(|| format!("docker save of {tag} failed"))?)
            .await?;
    }
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&partial, path).await?;
    Ok(())
}

/// `docker rmi tag`; an image that is not there is not an error.
pub async fn remove_image(docker: &Docker, tag: &str) -> anyhow::Result<()> {
    match docker
        .remove_image(
            tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot remove image {tag}: {e}")),
    }
}

/// Imports a busybox root filesystem as `tag` with `cmd` as its command
/// (shell form, as `docker import --change "CMD cmd"`). One layer.
pub async fn import_busybox(docker: &Docker, tag: &str, cmd: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    busybox_rootfs(dir.path())?;
    import(docker, tar_dir(dir.path())?, tag, &[format!("CMD {cmd}")]).await
}

/// Builds the demo image of `role` as `tag` (busybox, [`DEMO_SCRIPT`] as
/// `/bin/server-manager-demo`, run with the role as argument), saves it as a
/// `docker save` tarball at `out`, and removes `tag` from the engine again:
/// only the tarball is left.
pub async fn build_demo_tarball(
    docker: &Docker,
    rootfs: &Path,
    role: &str,
    tag: &str,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::write(rootfs.join("bin/server-manager-demo"), DEMO_SCRIPT)?;
    let changes = [
        format!(r#"CMD ["/bin/sh", "/bin/server-manager-demo", "{role}"]"#),
        "ENV SERVER_MANAGER_DEMO=not-contrail".to_string(),
    ];
    import(docker, tar_dir(rootfs)?, tag, &changes).await?;
    let saved = save(docker, tag, out).await;
    let removed = remove_image(docker, tag).await;
    saved.and(removed)
}
