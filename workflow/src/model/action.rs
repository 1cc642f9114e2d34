use super::{EnvMap, Spanned, Step, Template};
use crate::yaml::Pos;

/// An `action.yml`.
#[derive(Debug, Clone)]
pub struct Action {
    pub name: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub inputs: Vec<ActionInput>,
    pub outputs: Vec<ActionOutput>,
    pub runs: Runs,
    pub branding: Option<Branding>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct ActionInput {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<Template>,
    pub deprecation_message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ActionOutput {
    pub name: Spanned<String>,
    pub description: Option<String>,
    /// Only composite actions map outputs to a value.
    pub value: Option<Template>,
}

#[derive(Debug, Clone)]
pub enum Runs {
    Composite {
        steps: Vec<Step>,
    },
    Docker(DockerRuns),
    /// `node12`, `node16`, `node20`, `node24`: `using` keeps which.
    Node(NodeRuns),
}

#[derive(Debug, Clone)]
pub struct DockerRuns {
    pub image: Spanned<String>,
    pub entrypoint: Option<Template>,
    pub args: Vec<Template>,
    pub env: EnvMap,
    pub pre_entrypoint: Option<Template>,
    pub post_entrypoint: Option<Template>,
    pub pre_if: Option<String>,
    pub post_if: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NodeRuns {
    pub using: Spanned<String>,
    pub main: Spanned<String>,
    pub pre: Option<Spanned<String>>,
    pub post: Option<Spanned<String>>,
    pub pre_if: Option<String>,
    pub post_if: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Branding {
    pub icon: Option<String>,
    pub color: Option<String>,
}
