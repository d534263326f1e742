//! `larder-cli`: a family's grocery lists in the terminal, on Larder's
//! offline-first SDK. Every edit is on this machine's disk when the
//! command returns; `--offline` makes no network call at all, and `sync`
//! uploads what is waiting and shows the count of edits the server has not
//! stored go to zero.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use larder_client::{Client, Config, ItemDetails, ListHandle, SyncState};
use larder_crdt::ItemStatus;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "larder-cli",
    version,
    about = "Grocery lists that work offline"
)]
struct Cli {
    /// Where lists, unsent edits and the session are kept.
    #[arg(long, env = "LARDER_CLI_DIR", default_value = "./larder-cli-data")]
    data_dir: PathBuf,
    /// A server replica's base URL; repeat for several.
    #[arg(
        long = "server",
        env = "LARDER_SERVERS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    servers: Vec<String>,
    /// Touch no network: edits stay on this machine until `sync`.
    #[arg(long)]
    offline: bool,
    /// How long an online command waits for the server to store its edits.
    #[arg(long, default_value_t = 10)]
    wait_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account and sign in.
    Signup {
        #[arg(long)]
        email: String,
        #[arg(long, env = "LARDER_PASSWORD")]
        password: String,
        #[arg(long)]
        name: String,
    },
    /// Sign in.
    Login {
        #[arg(long)]
        email: String,
        #[arg(long, env = "LARDER_PASSWORD")]
        password: String,
    },
    /// Create a family and keep its lists on this machine.
    NewFamily { name: String },
    /// Families you belong to.
    Families,
    /// Create a list in a family.
    NewList {
        #[arg(long)]
        family: Uuid,
        name: String,
    },
    /// Keep every list of a family on this machine.
    Follow { family: Uuid },
    /// The lists kept on this machine.
    Lists,
    /// Show a list.
    Show { list: Uuid },
    /// Add items (one edit each, each on disk before the next).
    Add {
        list: Uuid,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        quantity: Option<String>,
    },
    /// Check an item off (by name or id prefix): purchased, or in the cart.
    Check {
        list: Uuid,
        item: String,
        #[arg(long)]
        cart: bool,
    },
    /// Remove an item (by name or id prefix).
    Remove { list: Uuid, item: String },
    /// What is not yet stored on the server, per list.
    Status,
    /// Go online, upload what waits and wait until the server stored it.
    Sync,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("larder-cli: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let offline = cli.offline;
    let wait = Duration::from_secs(cli.wait_secs);
    let mut config = Config::new(&cli.data_dir, cli.servers);
    // One-shot commands connect only when they need to (`sync`, or to
    // upload an edit just made).
    config.offline = true;
    let client = Client::open(config)
        .await
        .with_context(|| format!("opening {}", cli.data_dir.display()))?;
    let needs_network = |what: &str| -> anyhow::Result<()> {
        if offline {
            bail!("{what} needs the network; drop --offline");
        }
        Ok(())
    };
    match cli.command {
        Command::Signup {
            email,
            password,
            name,
        } => {
            needs_network("signing up")?;
            let session = client.sign_up(&email, &password, &name).await?;
            println!("signed up as {} ({})", session.email, session.user_id);
        }
        Command::Login { email, password } => {
            needs_network("signing in")?;
            let session = client.sign_in(&email, &password).await?;
            println!("signed in as {} ({})", session.email, session.user_id);
        }
        Command::NewFamily { name } => {
            needs_network("creating a family")?;
            let family = client.create_family(&name).await?;
            client.sync_family(family).await?;
            println!("family {family}");
        }
        Command::Families => {
            needs_network("listing families")?;
            for family in client.families().await? {
                println!("{}  {}  ({})", family.id, family.name, family.role);
            }
        }
        Command::NewList { family, name } => {
            needs_network("creating a list")?;
            let list = client.create_list(family, &name).await?;
            println!("list {}", list.id());
        }
        Command::Follow { family } => {
            client.sync_family(family).await?;
            if !offline {
                settle(&client, wait).await;
            }
            println!(
                "following family {family}: {} lists kept",
                client.lists().await?.len()
            );
        }
        Command::Lists => {
            for id in client.lists().await? {
                let list = client.list(id).await?;
                let snapshot = list.snapshot().await?;
                println!(
                    "{id}  {}  ({} items)",
                    snapshot.meta.name.as_deref().unwrap_or("(unnamed)"),
                    snapshot.items.len()
                );
            }
        }
        Command::Show { list } => {
            let list = client.list(list).await?;
            if !offline {
                settle(&client, wait).await;
            }
            show(&list).await?;
        }
        Command::Add {
            list,
            names,
            quantity,
        } => {
            let list = client.list(list).await?;
            for name in names {
                let details = ItemDetails {
                    quantity: quantity.clone(),
                    ..ItemDetails::default()
                };
                let id = list.add_item(&name, details).await?;
                println!("added {name} ({})", short(&id));
            }
            after_edit(&client, offline, wait).await;
        }
        Command::Check { list, item, cart } => {
            let list = client.list(list).await?;
            let id = find_item(&list, &item).await?;
            let status = if cart {
                ItemStatus::InCart
            } else {
                ItemStatus::Purchased
            };
            list.set_status(&id, status).await?;
            println!("{item}: {}", status.as_str());
            after_edit(&client, offline, wait).await;
        }
        Command::Remove { list, item } => {
            let list = client.list(list).await?;
            let id = find_item(&list, &item).await?;
            list.remove_item(&id).await?;
            println!("removed {item}");
            after_edit(&client, offline, wait).await;
        }
        Command::Status => print_status(&client).await?,
        Command::Sync => {
            needs_network("syncing")?;
            settle(&client, wait).await;
            print_status(&client).await?;
        }
    }
    client.close().await;
    Ok(())
}

/// Online: uploads the edit just made and says whether the server stored it.
async fn after_edit(client: &Client, offline: bool, wait: Duration) {
    let waiting = client.status().borrow().undurable;
    if offline {
        println!("kept on this machine; {waiting} edit(s) not yet on the server");
        return;
    }
    settle(client, wait).await;
    let status = client.status().borrow().clone();
    if status.undurable == 0 {
        println!("stored on the server");
    } else {
        println!(
            "kept on this machine; {} edit(s) not yet on the server{}",
            status.undurable,
            status
                .last_error
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
}

/// Goes online and waits until every kept list is synced, or `wait`
/// passes; the client stays online until it closes.
async fn settle(client: &Client, wait: Duration) {
    client.set_online(true);
    let mut status = client.status();
    let _ = tokio::time::timeout(wait, async {
        // A first connection, then everything synced.
        let _ = status.wait_for(|s| s.connects > 0 || !s.signed_in).await;
        let _ = status
            .wait_for(|s| !s.signed_in || (s.state == SyncState::Synced && s.undurable == 0))
            .await;
    })
    .await;
    // Lists that appeared while syncing a family get their turn too.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        let _ = status.changed().await;
    })
    .await;
    let _ = tokio::time::timeout(wait, status.wait_for(|s| s.state == SyncState::Synced)).await;
}

async fn print_status(client: &Client) -> anyhow::Result<()> {
    let overall = client.status().borrow().clone();
    for id in client.lists().await? {
        let list = client.list(id).await?;
        let name = list
            .snapshot()
            .await?
            .meta
            .name
            .unwrap_or_else(|| "(not synced yet)".into());
        let status = list.status().borrow().clone();
        let state = match &status.stopped {
            Some(stopped) => format!("stopped ({} {})", stopped.code, stopped.reason),
            None => format!("{:?}", status.state).to_lowercase(),
        };
        println!(
            "{id}  {name:<20}  {state:<10}  {} edit(s) not yet on the server",
            status.undurable
        );
    }
    for id in client.evicted_with_unsent().await? {
        println!(
            "{id}  deleted on the server; {} unsent edit(s) kept",
            client.unsent(id).await?.len()
        );
    }
    println!(
        "{} edit(s) not yet on the server{}",
        overall.undurable,
        if overall.signed_in {
            String::new()
        } else {
            " (signed out: run login)".into()
        }
    );
    Ok(())
}

async fn show(list: &ListHandle) -> anyhow::Result<()> {
    let snapshot = list.snapshot().await?;
    println!("{}", snapshot.meta.name.as_deref().unwrap_or("(unnamed)"));
    for item in &snapshot.items {
        let mark = match item.status {
            ItemStatus::Needed => "[ ]",
            ItemStatus::InCart => "[~]",
            ItemStatus::Purchased => "[x]",
        };
        let quantity = item
            .quantity
            .as_deref()
            .map(|q| format!(" ({q})"))
            .unwrap_or_default();
        println!("{mark} {}{quantity}  {}", item.name, short(&item.id));
    }
    Ok(())
}

/// An item by its name (case-insensitive) or the start of its id.
async fn find_item(list: &ListHandle, wanted: &str) -> anyhow::Result<String> {
    let items = list.snapshot().await?.items;
    let lower = wanted.to_lowercase();
    let matches: Vec<_> = items
        .iter()
        .filter(|i| i.name.to_lowercase() == lower || i.id.starts_with(wanted))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!("no item {wanted:?} on this list"),
        _ => bail!("{wanted:?} matches several items: use the id"),
    }
}

fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}
