//! The client commands of the `berth` binary: argument definitions and what each prints.
//! Results go to standard output, progress to standard error; a failure is one line and a
//! non-zero exit code (the binary prints the error).

use crate::archive::{self, SaveItem};
use crate::auth::{Credentials, DockerConfig};
use crate::error::Error;
use crate::image::{since, ImageView};
use crate::progress::{human, short};
use crate::reference::{ImageRef, DOCKER_HUB};
use crate::registry::{Options, Registry};
use crate::store::{Entry, LocalStore};
use crate::transfer::{self, local_name, Ctx};
use anyhow::{bail, Context, Result};
use berth_oci::manifest::Platform;
use berth_oci::Digest;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

/// Flags every client command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Talk to registries over plain HTTP, or HTTPS without checking certificates.
    #[arg(long)]
    insecure: bool,
    /// Print no progress.
    #[arg(short, long)]
    quiet: bool,
    /// The local image store (default: $XDG_DATA_HOME/berth or ~/.local/share/berth).
    #[arg(long, env = "BERTH_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Bytes per request of a chunked upload (a cut connection resends at most this).
    #[arg(long, default_value_t = 16 << 20, hide = true)]
    chunk_size: u64,
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    parallel: u16,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Pull an image from a registry into the local store.
    Pull {
        image: String,
        /// The platform to pull from a multi-platform image (os/arch[/variant]).
        #[arg(long, value_parser = parse_platform)]
        platform: Option<Platform>,
        /// Pull every platform of a multi-platform image.
        #[arg(long)]
        all_platforms: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Push an image of the local store to a registry.
    Push {
        image: String,
        #[command(flatten)]
        common: Common,
    },
    /// List the images of the local store, with the space shared layers save.
    Images {
        /// Only this repository.
        repository: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        common: Common,
    },
    /// Show an image's details as JSON: local, or from its registry when not pulled.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
        /// Ask the registry even when the image is in the local store.
        #[arg(long)]
        remote: bool,
        #[arg(long, value_parser = parse_platform)]
        platform: Option<Platform>,
        #[command(flatten)]
        common: Common,
    },
    /// Give a local image another name.
    Tag {
        source: String,
        target: String,
        #[command(flatten)]
        common: Common,
    },
    /// Remove names from the local store, and the blobs no other image uses.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete blobs no local image uses and leftovers of interrupted transfers.
    Prune {
        #[command(flatten)]
        common: Common,
    },
    /// Copy an image between registries: only missing blobs, mounted on the same registry,
    /// referrers too.
    Copy {
        source: String,
        target: String,
        /// Copy every platform of a multi-platform image.
        #[arg(long)]
        all: bool,
        #[arg(long, value_parser = parse_platform)]
        platform: Option<Platform>,
        #[command(flatten)]
        common: Common,
    },
    /// List the tags of a repository on its registry.
    Tags {
        repository: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        common: Common,
    },
    /// Store credentials for a registry (in ~/.docker/config.json or its credential helper).
    Login {
        /// The registry (default Docker Hub).
        server: Option<String>,
        #[arg(short, long)]
        username: Option<String>,
        #[arg(short, long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Forget the credentials for a registry.
    Logout {
        server: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Write images to a tar archive that `docker load` and OCI tools read.
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        /// The archive (default standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Read images from a docker or OCI archive.
    Load {
        /// The archive (default standard input).
        #[arg(short, long)]
        input: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| format!("{s:?} is not os/arch[/variant]"))
}

fn parse_ref(s: &str) -> Result<ImageRef> {
    Ok(s.parse::<ImageRef>()?)
}

impl Common {
    fn ctx(&self) -> Result<Ctx> {
        let opts = Options {
            insecure: self.insecure,
            chunk_size: self.chunk_size,
            ..Options::default()
        };
        let mut ctx = Ctx::new(opts, self.quiet)?;
        ctx.parallel = usize::from(self.parallel);
        Ok(ctx)
    }

    fn store(&self) -> Result<LocalStore> {
        let root = self.store.clone().unwrap_or_else(LocalStore::default_root);
        Ok(LocalStore::open(&root)?)
    }
}

/// Runs a client command to completion.
pub fn run(cmd: ClientCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(cmd))
}

async fn dispatch(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Pull {
            image,
            platform,
            all_platforms,
            common,
        } => pull(&common, &image, platform.as_ref(), all_platforms).await?,
        ClientCommand::Push { image, common } => {
            let r = parse_ref(&image)?;
            let (ctx, store) = (common.ctx()?, common.store()?);
            let _lock = store.lock_shared()?;
            let entry = find_local(&store, &image)?;
            let digest = transfer::push(&ctx, &store, &entry.descriptor, &r).await?;
            println!(
                "{}: digest: {digest} size: {}",
                r.tag.as_ref().map_or(digest.to_string(), |t| t.to_string()),
                entry.descriptor.size
            );
        }
        ClientCommand::Images {
            repository,
            format,
            common,
        } => images(&common.store()?, repository.as_deref(), format)?,
        ClientCommand::Inspect {
            images,
            remote,
            platform,
            common,
        } => inspect_all(&common, &images, remote, platform.as_ref()).await?,
        ClientCommand::Tag {
            source,
            target,
            common,
        } => tag(&common.store()?, &source, &target)?,
        ClientCommand::Rmi { images, common } => rmi(&common.store()?, &images)?,
        ClientCommand::Prune { common } => prune(&common)?,
        ClientCommand::Copy {
            source,
            target,
            all,
            platform,
            common,
        } => {
            let (src, dst) = (parse_ref(&source)?, parse_ref(&target)?);
            let ctx = common.ctx()?;
            let digest = transfer::copy(&ctx, &src, &dst, platform.as_ref(), all).await?;
            println!("{dst}: digest: {digest}");
        }
        ClientCommand::Tags {
            repository,
            format,
            common,
        } => tags(&common, &repository, format).await?,
        ClientCommand::Login {
            server,
            username,
            password,
            password_stdin,
            common,
        } => login(&common, server, username, password, password_stdin).await?,
        ClientCommand::Logout { server, common: _ } => logout(server.as_deref())?,
        ClientCommand::Save {
            images,
            output,
            common,
        } => save(&common.store()?, &images, output)?,
        ClientCommand::Load { input, common } => load(&common.store()?, input.as_deref())?,
    }
    Ok(())
}

/// `berth pull`: the image into the store, and docker's lines about it.
async fn pull(
    common: &Common,
    image: &str,
    platform: Option<&Platform>,
    all_platforms: bool,
) -> Result<()> {
    let r = parse_ref(image)?;
    let (ctx, store) = (common.ctx()?, common.store()?);
    let _lock = store.lock_shared()?;
    let before = store
        .entries()?
        .into_iter()
        .find(|e| e.name.as_deref() == Some(&local_name(&r)));
    let desc = transfer::pull(&ctx, &store, &r, platform, all_platforms).await?;
    let view = ImageView::local(&store, &desc).ok();
    let digest = view
        .as_ref()
        .map_or(desc.digest.clone(), |v| v.repo_digest.clone());
    if !common.quiet {
        println!("Digest: {digest}");
        let same = before.is_some_and(|b| b.descriptor.digest == desc.digest);
        let status = if same {
            "Image is up to date"
        } else {
            "Downloaded newer image"
        };
        println!("Status: {status} for {}", familiar(&local_name(&r)));
    }
    println!("{}", local_name(&r));
    Ok(())
}

/// `berth inspect`: docker-inspect JSON of each image, local or (with `remote`) read from
/// its registry.
async fn inspect_all(
    common: &Common,
    images: &[String],
    remote: bool,
    platform: Option<&Platform>,
) -> Result<()> {
    let (ctx, store) = (common.ctx()?, common.store()?);
    let mut out = Vec::new();
    for image in images {
        out.push(inspect(&ctx, &store, image, remote, platform).await?);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `berth logout`: forgets the credentials of a registry (Docker Hub by default).
fn logout(server: Option<&str>) -> Result<()> {
    let registry = registry_name(server);
    let mut cfg = DockerConfig::load(&DockerConfig::default_path())?;
    if cfg.erase(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

/// `berth tag`: another name for a stored image.
fn tag(store: &LocalStore, source: &str, target: &str) -> Result<()> {
    // Shared: a prune waits, so the image cannot vanish between lookup and naming.
    let _lock = store.lock_shared()?;
    let entry = find_local(store, source)?;
    let to = parse_ref(target)?;
    let mut desc = entry.descriptor;
    desc.annotations = desc
        .annotations
        .filter(|a| a.contains_key(transfer::REPO_DIGEST));
    store.set(&local_name(&to), desc)?;
    Ok(())
}

/// `berth prune`: blobs no image uses, and leftovers of transfers.
fn prune(common: &Common) -> Result<()> {
    let store = common.store()?;
    let _lock = store.lock_exclusive()?;
    let (deleted, scratch) = store.sweep(false)?;
    let freed: u64 = deleted.iter().map(|(_, s)| s).sum::<u64>() + scratch;
    if !common.quiet {
        for (d, _) in &deleted {
            println!("Deleted: {d}");
        }
    }
    println!("Total reclaimed space: {}", human(freed));
    Ok(())
}

/// `berth tags`: a repository's tags, as a table or JSON.
async fn tags(common: &Common, repository: &str, format: Format) -> Result<()> {
    let r = ImageRef::parse(repository, false)?;
    let ctx = common.ctx()?;
    let tags = ctx.registry(&r).await?.tags(&r.repo).await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"name": r.repository(), "tags": tags}))?
        ),
        Format::Table => {
            for t in tags {
                println!("{t}");
            }
        }
    }
    Ok(())
}

/// `berth load`: images from a docker or OCI archive, a file or standard input.
fn load(store: &LocalStore, input: Option<&std::path::Path>) -> Result<()> {
    let _lock = store.lock_shared()?;
    let loaded = match input {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            archive::load(store, std::io::BufReader::new(f))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no archive: give --input FILE or pipe one in");
            }
            archive::load(store, std::io::stdin().lock())?
        }
    };
    for e in loaded.entries {
        match e.name {
            Some(n) => println!("Loaded image: {}", familiar(&n)),
            None => println!("Loaded image ID: {}", e.descriptor.digest),
        }
    }
    Ok(())
}

/// A stored name as docker prints it: Docker Hub's prefixes dropped.
fn familiar(name: &str) -> String {
    match ImageRef::parse(name, false) {
        Ok(r) => {
            let repo = r.familiar_repository();
            match (&r.tag, &r.digest) {
                (Some(t), _) => format!("{repo}:{t}"),
                (None, Some(d)) => format!("{repo}@{d}"),
                (None, None) => repo,
            }
        }
        Err(_) => name.to_owned(),
    }
}

/// The registry a login or logout is for: Docker Hub when none is given.
fn registry_name(server: Option<&str>) -> String {
    let s = server.unwrap_or(DOCKER_HUB);
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_owned(),
        s => s.to_owned(),
    }
}

/// Finds a local image by name, by `name@digest`, or by a prefix of its id or digest.
fn find_local(store: &LocalStore, input: &str) -> Result<Entry, Error> {
    let entries = store.entries()?;
    if let Ok(r) = input.parse::<ImageRef>() {
        let name = local_name(&r);
        if let Some(e) = entries.iter().find(|e| e.name.as_deref() == Some(&name)) {
            return Ok(e.clone());
        }
        if let Some(d) = &r.digest {
            if let Some(e) = entries.iter().find(|e| {
                &e.descriptor.digest == d
                    && e.name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(&r.repository()))
            }) {
                return Ok(e.clone());
            }
        }
    }
    let hex = input.trim_start_matches("sha256:");
    if hex.len() >= 4
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        let matches: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                let id = ImageView::local(store, &e.descriptor).map(|v| v.id.hex().to_owned());
                e.descriptor.digest.hex().starts_with(hex) || id.is_ok_and(|id| id.starts_with(hex))
            })
            .collect();
        // Several names of one image are one match; two images are not.
        let distinct: HashSet<&Digest> = matches.iter().map(|e| &e.descriptor.digest).collect();
        if distinct.len() > 1 {
            return Err(Error::Invalid(format!(
                "{input} is ambiguous: {} images have ids starting so",
                distinct.len()
            )));
        }
        if let Some(e) = matches.first() {
            return Ok((*e).clone());
        }
    }
    Err(Error::NotFound(format!("no such image: {input}")))
}

/// One row of `berth images`.
struct Row {
    repository: String,
    tag: String,
    view: ImageView,
    blobs: Vec<(Digest, u64)>,
}

fn images(store: &LocalStore, only: Option<&str>, format: Format) -> Result<()> {
    let rows = image_rows(store, only)?;
    // A blob is shared when images with different ids use it.
    let mut users: HashMap<&Digest, HashSet<&Digest>> = HashMap::new();
    for r in &rows {
        for (d, _) in &r.blobs {
            users.entry(d).or_default().insert(&r.view.id);
        }
    }
    let shared = |r: &Row| -> u64 {
        r.blobs
            .iter()
            .filter(|(d, _)| users.get(d).is_some_and(|u| u.len() > 1))
            .map(|(_, s)| s)
            .sum()
    };
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_by(|a, b| {
        b.view
            .created()
            .cmp(&a.view.created())
            .then_with(|| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)))
    });
    let listed: Vec<(&Row, u64)> = order.into_iter().map(|r| (r, shared(r))).collect();
    match format {
        Format::Json => images_json(&listed),
        Format::Table => images_table(&rows, &listed, &users),
    }
}

/// One row per named image of the store (of one repository, with `only`).
fn image_rows(store: &LocalStore, only: Option<&str>) -> Result<Vec<Row>> {
    let wanted = only.map(|o| ImageRef::parse(o, false).map(|r| r.familiar_repository()));
    let mut rows = Vec::new();
    for e in store.entries()? {
        let Ok(view) = ImageView::local(store, &e.descriptor) else {
            continue;
        };
        let (repository, tag) = match e.name.as_deref().map(|n| ImageRef::parse(n, false)) {
            Some(Ok(r)) => (
                r.familiar_repository(),
                r.tag.map_or("<none>".to_owned(), |t| t.to_string()),
            ),
            _ => ("<none>".to_owned(), "<none>".to_owned()),
        };
        if let Some(w) = &wanted {
            if w.as_ref().ok() != Some(&repository) {
                continue;
            }
        }
        let mut blobs = vec![(view.id.clone(), view.config_size)];
        blobs.extend(view.layers.iter().map(|l| (l.digest.clone(), l.size)));
        blobs.sort();
        blobs.dedup();
        rows.push(Row {
            repository,
            tag,
            view,
            blobs,
        });
    }
    Ok(rows)
}

/// `berth images --format json`: each row with its shared and unique sizes.
fn images_json(listed: &[(&Row, u64)]) -> Result<()> {
    let list: Vec<Value> = listed
        .iter()
        .map(|(r, sh)| {
            json!({
                "Repository": r.repository,
                "Tag": r.tag,
                "ID": r.view.id,
                "Digest": r.view.repo_digest,
                "Created": r.view.created(),
                "CreatedSince": since(r.view.created()),
                "Size": r.view.size(),
                "SharedSize": sh,
                "UniqueSize": r.view.size() - sh,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&list)?);
    Ok(())
}

/// `berth images`: a table as docker's, and what the store's sharing saves.
fn images_table(
    rows: &[Row],
    listed: &[(&Row, u64)],
    users: &HashMap<&Digest, HashSet<&Digest>>,
) -> Result<()> {
    let mut table = vec![[
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
        "SHARED SIZE".into(),
        "UNIQUE SIZE".into(),
    ]];
    for (r, sh) in listed {
        table.push([
            r.repository.clone(),
            r.tag.clone(),
            short(&r.view.id),
            since(r.view.created()),
            human(r.view.size()),
            human(*sh),
            human(r.view.size() - sh),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    let on_disk: u64 = users
        .keys()
        .filter_map(|d| {
            rows.iter()
                .flat_map(|r| &r.blobs)
                .find(|(x, _)| &x == d)
                .map(|(_, s)| *s)
        })
        .sum();
    let per_image: BTreeMap<&Digest, u64> =
        rows.iter().map(|r| (&r.view.id, r.view.size())).collect();
    let logical: u64 = per_image.values().sum();
    writeln!(
        out,
        "\n{} images, {} on disk ({} if each image kept its own layers)",
        per_image.len(),
        human(on_disk),
        human(logical)
    )?;
    Ok(())
}

async fn inspect(
    ctx: &Ctx,
    store: &LocalStore,
    image: &str,
    remote: bool,
    platform: Option<&Platform>,
) -> Result<Value> {
    let local = if remote {
        None
    } else {
        find_local(store, image).ok()
    };
    match local {
        Some(entry) => {
            let view = ImageView::local(store, &entry.descriptor)?;
            let mut tags = Vec::new();
            let mut digests = Vec::new();
            for e in store.entries()? {
                let Some(name) = e.name.as_deref() else {
                    continue;
                };
                let Ok(v) = ImageView::local(store, &e.descriptor) else {
                    continue;
                };
                if v.id != view.id {
                    continue;
                }
                if let Ok(r) = ImageRef::parse(name, false) {
                    if r.tag.is_some() {
                        tags.push(familiar(name));
                    }
                    let d = format!("{}@{}", r.familiar_repository(), v.repo_digest);
                    if !digests.contains(&d) {
                        digests.push(d);
                    }
                }
            }
            Ok(view.inspect(tags, digests))
        }
        None => {
            let r = parse_ref(image)?;
            let view = ImageView::remote(ctx, &r, platform).await?;
            let digest = format!("{}@{}", r.familiar_repository(), view.repo_digest);
            Ok(view.inspect(Vec::new(), vec![digest]))
        }
    }
}

fn rmi(store: &LocalStore, images: &[String]) -> Result<()> {
    let _lock = store.lock_exclusive()?;
    for image in images {
        let entry = find_local(store, image)?;
        // By id or digest: every name of the image goes; by name: that name only.
        let by_name = image
            .parse::<ImageRef>()
            .is_ok_and(|r| entry.name.as_deref() == Some(&local_name(&r)));
        let mut removed = Vec::new();
        store.update(|all| {
            all.retain(|e| {
                let hit = if by_name {
                    e.name == entry.name
                } else {
                    e.descriptor.digest == entry.descriptor.digest
                };
                if hit {
                    removed.push(e.name.clone());
                }
                !hit
            })
        })?;
        for name in removed.into_iter().flatten() {
            println!("Untagged: {}", familiar(&name));
        }
    }
    let (deleted, _) = store.sweep(true)?;
    for (d, _) in deleted {
        println!("Deleted: {d}");
    }
    Ok(())
}

fn save(store: &LocalStore, images: &[String], output: Option<PathBuf>) -> Result<()> {
    // Shared: a prune waits until every blob is in the archive.
    let _lock = store.lock_shared()?;
    let mut by_image: Vec<SaveItem> = Vec::new();
    for image in images {
        let entry = find_local(store, image)?;
        let view = ImageView::local(store, &entry.descriptor)?;
        let name = entry.name.clone().filter(|n| !n.contains('@'));
        match by_image
            .iter_mut()
            .find(|i| i.manifest.digest == view.manifest.digest)
        {
            Some(item) => {
                if let Some(n) = name {
                    item.names.push(familiar(&n));
                    item.full_names.push(n);
                }
            }
            None => by_image.push(SaveItem {
                names: name.iter().map(|n| familiar(n)).collect(),
                full_names: name.into_iter().collect(),
                manifest: view.manifest.clone(),
                config: view.id.clone(),
                layers: view.layers.iter().map(|l| l.digest.clone()).collect(),
            }),
        }
    }
    match output {
        // A device or a pipe (`-o /dev/stdout`) is written as it is.
        Some(path) if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            archive::save(store, &by_image, &mut w)?;
            w.flush()?;
        }
        // A file appears whole or not at all: written beside it, then renamed.
        Some(path) => {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "archive".into());
            let tmp = path.with_file_name(format!(".{file_name}.{}.partial", std::process::id()));
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let written = archive::save(store, &by_image, &mut w)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(w.into_inner().map_err(|e| e.into_error())?))
                .and_then(|f| Ok(f.sync_all()?))
                .and_then(|()| {
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("cannot write {}", path.display()))
                });
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: give --output FILE or redirect");
            }
            archive::save(store, &by_image, std::io::stdout().lock())?;
        }
    }
    Ok(())
}

async fn login(
    common: &Common,
    server: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
) -> Result<()> {
    let registry = registry_name(server.as_deref());
    let interactive = std::io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if interactive && !password_stdin => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_owned()
        }
        None => bail!("give --username (and --password-stdin) when not on a terminal"),
    };
    let password = match (password, password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p)?;
            p.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) if interactive => rpassword::prompt_password("Password: ")?,
        (None, false) => bail!("give --password-stdin and the password on standard input"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are needed");
    }
    let creds = Credentials {
        username,
        secret: password,
    };
    let r: ImageRef = format!("{registry}/x").parse()?;
    let ctx = common.ctx()?;
    let opts = Options {
        insecure: common.insecure,
        ..Options::default()
    };
    let reg = Registry::connect(
        crate::registry::http_client(common.insecure)?,
        &registry,
        r.api_host(),
        r.is_local(),
        Some(creds.clone()),
        opts,
    )
    .await?;
    reg.ping().await?;
    let mut cfg = DockerConfig::load(ctx.config_path())?;
    cfg.store(&registry, &creds)?;
    println!("Login Succeeded");
    Ok(())
}
