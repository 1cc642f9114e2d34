//! Job-level mappings whose keys are only known once evaluated (written as expressions,
//! `${{ insert }}`, or the whole mapping as one expression), read as GitHub reads the
//! evaluated template: container, services, strategy, environment, concurrency,
//! `defaults.run` and credentials.

use kiln_workflow::eval::{
    evaluate_concurrency, evaluate_environment, evaluate_job_containers, evaluate_run_defaults,
    evaluate_strategy, ContainerValues,
};
use kiln_workflow::expr::{JobStatus, SimpleContext};
use kiln_workflow::model::Job;
use kiln_workflow::parse_workflow;

/// Job `t` of a workflow whose job `t` is given as YAML lines (after `runs-on`).
fn job(lines: &str) -> Job {
    let yaml = format!("on: push\njobs:\n  t:\n    runs-on: x\n{lines}    steps: [run: echo]\n");
    let parsed = parse_workflow("w.yml", &yaml);
    let errors: Vec<String> = parsed.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:?}");
    parsed
        .value
        .and_then(|w| w.job("t").cloned())
        .expect("job t")
}

fn ctx() -> SimpleContext {
    SimpleContext::from_json(
        &serde_json::json!({
            "matrix": {
                "container": {"image": "node:20", "options": "--cpus 1", "env": {"A": 1}},
                "db": "postgres",
                "services": {"cache": "redis:7", "queue": {"image": "rabbitmq", "ports": [5672]}},
                "name": "prod"
            },
            "needs": {"plan": {"outputs": {
                "strategy": "{\"fail-fast\": false, \"max-parallel\": 2, \"matrix\": {\"os\": [\"a\", \"b\"]}}",
                "environment": "{\"name\": \"staging\", \"url\": \"https://s.example\", \"deployment\": false}"
            }}},
            "secrets": {"TOKEN": "s3cret"},
            "env": {"USER_NAME": "bot"}
        }),
        JobStatus::Success,
    )
}

fn containers(job: &Job) -> (Option<ContainerValues>, Vec<(String, ContainerValues)>) {
    evaluate_job_containers(job, &ctx()).expect("containers evaluate")
}

#[test]
fn a_container_written_as_one_expression_may_be_a_mapping_of_its_keys() {
    let (container, _) = containers(&job("    container: ${{ matrix.container }}\n"));
    assert_eq!(
        container,
        Some(ContainerValues {
            image: "node:20".into(),
            env: vec![("A".into(), "1".into())],
            options: "--cpus 1".into(),
            ..Default::default()
        })
    );
}

#[test]
fn container_keys_and_credentials_may_be_expressions_or_inserted() {
    let (container, _) = containers(&job(
        "    container:\n      image: alpine\n      ${{ 'options' }}: --init\n      ${{ insert }}: {ports: [8080]}\n      credentials:\n        ${{ insert }}: {username: '${{ env.USER_NAME }}', password: '${{ secrets.TOKEN }}'}\n",
    ));
    let container = container.expect("a container");
    assert_eq!(container.options, "--init");
    assert_eq!(container.ports, ["8080"]);
    assert_eq!(
        container.credentials,
        Some(("bot".to_string(), "s3cret".to_string()))
    );
    let job = job("    container:\n      image: alpine\n      ${{ insert }}: {image: other}\n");
    let error = evaluate_job_containers(&job, &ctx()).expect_err("image twice");
    assert!(error.contains("'image' is already defined"), "{error}");
}

#[test]
fn services_may_be_named_by_expressions_and_inserted() {
    let (_, services) = containers(&job(
        "    services:\n      ${{ matrix.db }}: {image: 'postgres:16'}\n      ${{ insert }}: ${{ matrix.services }}\n",
    ));
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["postgres", "cache", "queue"]);
    assert_eq!(services[1].1.image, "redis:7");
    assert_eq!(services[2].1.ports, ["5672"]);
    let (_, whole) = containers(&job("    services: ${{ matrix.services }}\n"));
    assert_eq!(
        whole.len(),
        2,
        "a whole-expression services mapping is not dropped"
    );
}

#[test]
fn a_strategy_may_come_from_needs_as_a_whole() {
    let job = job("    strategy: ${{ fromJSON(needs.plan.outputs.strategy) }}\n");
    let strategy = job.strategy.as_ref().expect("strategy");
    let values = evaluate_strategy(strategy, &ctx()).expect("strategy evaluates");
    assert!(!values.fail_fast);
    assert_eq!(values.max_parallel, Some(2.0));
    assert_eq!(
        values.matrix.map(|m| m.to_json()),
        Some(serde_json::json!({"os": ["a", "b"]}))
    );
}

#[test]
fn environment_and_concurrency_may_be_mappings_from_expressions() {
    let job_yaml = job(
        "    environment: ${{ fromJSON(needs.plan.outputs.environment) }}\n    concurrency: '${{ fromJSON(''{\"group\": \"g\", \"cancel-in-progress\": true}'') }}'\n",
    );
    let environment = evaluate_environment(job_yaml.environment.as_ref().expect("env"), &ctx())
        .expect("evaluates")
        .expect("a name");
    assert_eq!(environment.name, "staging");
    assert_eq!(environment.url.as_deref(), Some("https://s.example"));
    assert!(!environment.deployment);
    let concurrency = job_yaml.concurrency.as_ref().expect("concurrency");
    assert_eq!(
        evaluate_concurrency(concurrency, &ctx(), "concurrency").expect("evaluates"),
        ("g".to_string(), true)
    );
    let keyed = job(
        "    environment:\n      ${{ 'name' }}: ${{ matrix.name }}\n      ${{ insert }}: {deployment: false}\n    concurrency:\n      ${{ insert }}: {group: keyed}\n",
    );
    let environment = evaluate_environment(keyed.environment.as_ref().expect("env"), &ctx())
        .expect("evaluates")
        .expect("a name");
    assert_eq!(
        (environment.name.as_str(), environment.deployment),
        ("prod", false)
    );
    assert_eq!(
        evaluate_concurrency(
            keyed.concurrency.as_ref().expect("c"),
            &ctx(),
            "concurrency"
        )
        .expect("evaluates"),
        ("keyed".to_string(), false)
    );
}

#[test]
fn job_defaults_run_may_have_expression_keys() {
    let job = job(
        "    defaults:\n      run:\n        ${{ insert }}: {shell: sh, working-directory: '${{ matrix.name }}'}\n",
    );
    assert_eq!(
        evaluate_run_defaults(job.defaults.as_ref().expect("defaults"), &ctx()).expect("evaluates"),
        (Some("sh".to_string()), Some("prod".to_string()))
    );
}

#[test]
fn an_evaluated_key_that_is_not_a_property_is_an_error() {
    let job = job("    strategy:\n      ${{ insert }}: {matrix: {a: [1]}, parallel: 2}\n");
    let error = evaluate_strategy(job.strategy.as_ref().expect("strategy"), &ctx())
        .expect_err("unknown key");
    assert!(error.contains("Unexpected value 'parallel'"), "{error}");
}
