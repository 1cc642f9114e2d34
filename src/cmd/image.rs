//! `kiln image build`: the local base image that `ubuntu-latest` maps to.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kiln_runner::image::{
    build_base_image_blocking, BaseImageOptions, BuildOutcome, ImageEvent, DEFAULT_BASE_TAG,
};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a Debian base image with debootstrap and import it into Docker (needs root).
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image tag to create.
    #[arg(long, default_value = DEFAULT_BASE_TAG)]
    pub tag: String,
    /// Extra Debian packages to install, comma-separated (for example git,curl).
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// Debian suite to bootstrap.
    #[arg(long, default_value = "bookworm")]
    pub suite: String,
    /// Debian mirror URL; by default the one this machine's apt sources use.
    #[arg(long)]
    pub mirror: Option<String>,
    /// Rebuild even if the tag already exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImageCommand::Build(build) => build_command(build),
    }
}

fn build_command(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let options = BaseImageOptions {
        tag: args.tag,
        suite: args.suite,
        include: args
            .include
            .into_iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect(),
        mirror: args.mirror,
        force: args.force,
    };
    let outcome = build_base_image_blocking(&options, render_event)?;
    if let BuildOutcome::AlreadyPresent = outcome {
        eprintln!("kiln: use --force to rebuild it");
    }
    Ok(ExitCode::SUCCESS)
}

fn render_event(event: ImageEvent) {
    match event {
        ImageEvent::AlreadyPresent { tag } => eprintln!("kiln: image {tag} already exists"),
        ImageEvent::Phase(phase) => eprintln!("kiln: {phase}"),
        ImageEvent::Output(line) => eprintln!("  {line}"),
        ImageEvent::Imported { tag, id } => println!("{tag} {id}"),
    }
}
