//! `prepare` for the Docker backend: the network, then the services and the job container.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as ApiError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, Mount as ApiMount, MountType, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
};
use futures_util::future::{join, join_all, try_join_all};
use futures_util::StreamExt;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::options::{parse_options, parse_ports, split_volumes, CreateOptions};
use super::{DockerBackend, DockerHandle};
use crate::backend::names::sanitize_name;
use crate::backend::{
    BackendError, ContainerSpec, Handle, JobEnv, JobSpec, Mount, ServiceInfo, ServiceSpec,
};

/// Keeps the job container running between execs; present in every Debian and busybox image.
const KEEP_ALIVE: [&str; 3] = ["tail", "-f", "/dev/null"];

/// Health polling: an inspect costs a few milliseconds, while every poll interval is added
/// to the job's start, so poll often (a service that takes a minute costs 600 cheap calls).
const HEALTH_POLL_FIRST: Duration = Duration::from_millis(25);
const HEALTH_POLL_MAX: Duration = Duration::from_millis(100);

/// How much of a failed service's output goes into the error.
const SERVICE_LOG_TAIL: &str = "20";

struct Names {
    network: String,
    /// Whether the job gets its own network (see [`super::DockerConfig::always_create_network`]).
    own_network: bool,
    /// The job network's id once it is created; containers join it by id.
    network_id: Option<String>,
    job_container: String,
    labels: HashMap<String, String>,
    /// The daemon's socket and the job's own, which containers that mount the daemon's
    /// socket get instead.
    sockets: Option<(String, String)>,
}

impl Names {
    fn new(job: &JobSpec, always_create_network: bool) -> Self {
        let slug = sanitize_name(&job.job_key);
        Names {
            network: format!("kiln-{slug}"),
            own_network: always_create_network || !job.services.is_empty(),
            network_id: None,
            job_container: format!("kiln-{slug}-job"),
            labels: job.object_labels().into_iter().collect(),
            sockets: None,
        }
    }

    /// A bind-mount source, or the job's own socket when it names the daemon's.
    fn through_job_socket(&self, source: &str) -> String {
        match &self.sockets {
            Some((daemon, job)) if source == daemon => job.clone(),
            _ => source.to_owned(),
        }
    }

    fn service_container(&self, service: &str) -> String {
        format!("{}-svc-{}", self.network, sanitize_name(service))
    }
}

pub(super) async fn prepare_job(
    backend: &DockerBackend,
    job: &JobSpec,
    cancel: &CancellationToken,
) -> Result<JobEnv, BackendError> {
    let container = job.container.as_ref().ok_or_else(|| {
        BackendError::InvalidSpec(
            "a Docker job needs an image: the job's `container:` or the image its `runs-on` maps to".into(),
        )
    })?;
    let workspace_path = match &job.workspace_job_path {
        Some(path) => path.clone(),
        None => job.workspace.to_string_lossy().into_owned(),
    };
    if !workspace_path.starts_with('/') || !job.workspace.is_absolute() {
        return Err(BackendError::InvalidSpec(format!(
            "the workspace must be an absolute path, not {}",
            job.workspace.display()
        )));
    }
    // Parse everything before creating anything, so a typo costs no Docker round trips.
    let job_options = parse_options(&container.options, "job container")?;
    if job_options.entrypoint.is_some() {
        return Err(BackendError::option(
            "job container",
            "--entrypoint",
            "the job container runs kiln's keep-alive process; --entrypoint is for services",
        ));
    }
    let service_options = job
        .services
        .iter()
        .map(|service| {
            parse_options(
                &service.container.options,
                &format!("service `{}`", service.name),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Started first: a container that mounts the daemon's socket mounts this one instead.
    let proxy = super::start_job_proxy(job);
    let mut names = Names::new(job, backend.config.always_create_network);
    names.sockets = proxy.as_ref().and_then(|proxy| {
        let daemon = super::local_daemon_socket()?;
        Some((
            daemon.to_string_lossy().into_owned(),
            proxy.path().to_string_lossy().into_owned(),
        ))
    });
    if names.own_network {
        names.network_id = Some(create_network(backend, job, &names).await?);
    }
    check_cancel(cancel)?;

    // Mount objects, not `-v` strings: a path may contain `:`.
    let workspace_mount = Mount {
        host_path: job.workspace.clone(),
        job_path: workspace_path.clone(),
        read_only: false,
    };
    let mounts: Vec<Mount> = job.extra_mounts.clone();
    let job_mounts = std::iter::once(&workspace_mount)
        .chain(&mounts)
        .map(|mount| ApiMount {
            typ: Some(MountType::BIND),
            source: Some(mount.host_path.to_string_lossy().into_owned()),
            target: Some(mount.job_path.clone()),
            read_only: Some(mount.read_only),
            ..Default::default()
        })
        .collect();
    let job_body = container_body(
        container,
        &job_options,
        &names,
        ContainerRole::Job {
            mounts: job_mounts,
            workdir: workspace_path.clone(),
        },
        "job container",
    )?;
    // The job container starts while the services start and pass their health checks: name
    // resolution on the network happens when a step connects, so the order does not matter.
    // `join`, not `try_join`, around creations: one failure must not drop another creation
    // mid-request (the daemon would finish it after the cleanup sweep has run).
    // A job container that cannot start ends the services' wait: the job cannot run anyway.
    let setup_cancel = cancel.child_token();
    let job_container = async {
        let started = start_container(backend, &names.job_container, job_body, container).await;
        if started.is_err() {
            setup_cancel.cancel();
        }
        started
    };
    let services = async {
        let ids = join_all(
            job.services
                .iter()
                .zip(&service_options)
                .map(|(service, options)| start_service(backend, service, options, &names)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        check_cancel(&setup_cancel)?;
        // Waiting only inspects, so stopping at the first failure is fine here.
        let ready = try_join_all(
            job.services
                .iter()
                .zip(&ids)
                .map(|(service, id)| wait_until_ready(backend, service, id, &setup_cancel)),
        )
        .await?;
        Ok::<_, BackendError>((ids, ready))
    };
    let (container_id, services) = join(job_container, services).await;
    let (container_id, (service_ids, services)) = (container_id?, services?);

    Ok(JobEnv {
        job_key: job.job_key.clone(),
        workspace_path,
        mounts,
        services,
        network: names.network_id.as_ref().map(|_| names.network.clone()),
        container_id: Some(container_id.clone()),
        labels: job.object_labels(),
        docker_proxy: proxy,
        handle: Handle::Docker(DockerHandle {
            container_id,
            service_ids,
            network_id: names.network_id.clone(),
        }),
    })
}

async fn create_network(
    backend: &DockerBackend,
    job: &JobSpec,
    names: &Names,
) -> Result<String, BackendError> {
    let request = NetworkCreateRequest {
        name: names.network.clone(),
        driver: Some("bridge".into()),
        labels: Some(names.labels.clone()),
        ..Default::default()
    };
    // A 1.41 daemon happily creates a second network with the same name and then refuses the
    // name as ambiguous, so a leftover of a killed run with this key goes first. Nothing of
    // this run exists yet, so sweeping by key is safe.
    if !backend.labelled_networks(&job.job_key).await?.is_empty() {
        backend.remove_job_objects(&job.job_key).await?;
    }
    match backend.docker.create_network(request.clone()).await {
        Ok(created) => Ok(created.id),
        // A leftover from an earlier run with the same key (killed before it cleaned up).
        Err(ApiError::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            backend.remove_job_objects(&job.job_key).await?;
            backend
                .docker
                .create_network(request)
                .await
                .map(|created| created.id)
                .map_err(|e| BackendError::docker(format!("creating network {}", names.network), e))
        }
        Err(e) => Err(BackendError::docker(
            format!("creating network {}", names.network),
            e,
        )),
    }
}

enum ContainerRole {
    Service {
        alias: String,
    },
    Job {
        mounts: Vec<ApiMount>,
        workdir: String,
    },
}

fn container_body(
    spec: &ContainerSpec,
    options: &CreateOptions,
    names: &Names,
    role: ContainerRole,
    subject: &str,
) -> Result<ContainerCreateBody, BackendError> {
    let (exposed_ports, port_bindings) = parse_ports(&spec.ports, subject)?;
    let mut all_volumes = spec.volumes.clone();
    all_volumes.extend(options.volumes.iter().cloned());
    let (binds, anonymous) = split_volumes(&all_volumes);
    let binds: Vec<String> = binds
        .into_iter()
        .map(|bind| match bind.split_once(':') {
            Some((source, rest)) => format!("{}:{rest}", names.through_job_socket(source)),
            None => bind,
        })
        .collect();
    let mut mounts = options.mounts.clone();
    for mount in &mut mounts {
        if let Some(source) = &mut mount.source {
            *source = names.through_job_socket(source);
        }
    }
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(options.env.iter().cloned());

    let mut aliases = options.aliases.clone();
    let (entrypoint, working_dir, log_config) = match role {
        ContainerRole::Service { alias } => {
            aliases.insert(0, alias);
            // A failed service's log goes into the error, so services keep Docker's default.
            (options.entrypoint.clone().map(|e| vec![e]), None, None)
        }
        ContainerRole::Job {
            mounts: job_mounts,
            workdir,
        } => {
            mounts.splice(0..0, job_mounts);
            (
                Some(KEEP_ALIVE.iter().map(|s| s.to_string()).collect()),
                Some(workdir),
                // The keep-alive process writes nothing (steps are execs with their own
                // streams), and a log driver costs the daemon a file and a copier per start.
                Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
            )
        }
    };
    let endpoint = EndpointSettings {
        aliases: (!aliases.is_empty()).then_some(aliases),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: (!env.is_empty()).then_some(env),
        entrypoint,
        working_dir,
        user: options.user.clone(),
        healthcheck: options.health.clone(),
        labels: Some(names.labels.clone()),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            network_mode: names.network_id.clone(),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            privileged: options.privileged.then_some(true),
            nano_cpus: options.nano_cpus,
            memory: options.memory,
            tmpfs: (!options.tmpfs.is_empty()).then(|| options.tmpfs.clone()),
            mounts: (!mounts.is_empty()).then_some(mounts),
            log_config,
            ..Default::default()
        }),
        networking_config: names.network_id.as_ref().map(|id| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(id.clone(), endpoint)])),
        }),
        ..Default::default()
    })
}

async fn start_service(
    backend: &DockerBackend,
    service: &ServiceSpec,
    options: &CreateOptions,
    names: &Names,
) -> Result<String, BackendError> {
    let subject = format!("service `{}`", service.name);
    let body = container_body(
        &service.container,
        options,
        names,
        ContainerRole::Service {
            alias: service.name.clone(),
        },
        &subject,
    )?;
    start_container(
        backend,
        &names.service_container(&service.name),
        body,
        &service.container,
    )
    .await
}

/// Creates and starts a container; returns its id. Pulls a missing image only when allowed.
async fn start_container(
    backend: &DockerBackend,
    name: &str,
    body: ContainerCreateBody,
    spec: &ContainerSpec,
) -> Result<String, BackendError> {
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    let created = match backend
        .docker
        .create_container(Some(options.clone()), body.clone())
        .await
    {
        Err(ApiError::DockerResponseServerError {
            status_code: 404, ..
        }) if backend.config.allow_pull => {
            pull_image(backend, spec).await?;
            backend.docker.create_container(Some(options), body).await
        }
        // A container of an earlier run with the same job key, killed before its cleanup.
        Err(ApiError::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            backend.remove_containers(&[name.to_owned()]).await?;
            backend.docker.create_container(Some(options), body).await
        }
        other => other,
    };
    let id = match created {
        Ok(created) => created.id,
        Err(ApiError::DockerResponseServerError {
            status_code: 404,
            message,
        }) if message.contains("image") => {
            return Err(missing_image(&spec.image));
        }
        Err(e) => {
            return Err(BackendError::docker(
                format!("creating container {name}"),
                e,
            ))
        }
    };
    backend
        .docker
        .start_container(&id, None)
        .await
        .map_err(|e| {
            BackendError::docker(format!("starting container {name} ({})", spec.image), e)
        })?;
    Ok(id)
}

fn check_cancel(cancel: &CancellationToken) -> Result<(), BackendError> {
    if cancel.is_cancelled() {
        Err(BackendError::Cancelled)
    } else {
        Ok(())
    }
}

fn missing_image(image: &str) -> BackendError {
    let fix = if image.starts_with("kiln-base") {
        format!("build it with `kiln image build --tag {image}`")
    } else {
        format!(
            "load it with `docker load -i FILE.tar` or `docker import ROOTFS.tar {image}`, \
             or map the job to a local image with -P"
        )
    };
    BackendError::ImageMissing {
        image: image.to_owned(),
        fix,
    }
}

async fn pull_image(backend: &DockerBackend, spec: &ContainerSpec) -> Result<(), BackendError> {
    let options = CreateImageOptionsBuilder::new()
        .from_image(&spec.image)
        .build();
    let credentials = spec
        .credentials
        .as_ref()
        .map(|(username, password)| DockerCredentials {
            username: Some(username.clone()),
            password: Some(password.clone()),
            ..Default::default()
        });
    let mut progress = backend
        .docker
        .create_image(Some(options), None, credentials);
    while let Some(event) = progress.next().await {
        event.map_err(|e| BackendError::PullFailed {
            image: spec.image.clone(),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// Waits until a service is running and, if it has a health check, healthy. Returns what the
/// job sees of it.
async fn wait_until_ready(
    backend: &DockerBackend,
    service: &ServiceSpec,
    id: &str,
    cancel: &CancellationToken,
) -> Result<ServiceInfo, BackendError> {
    let started = Instant::now();
    let mut poll = HEALTH_POLL_FIRST;
    loop {
        let info = backend
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| {
                BackendError::docker(format!("inspecting service `{}`", service.name), e)
            })?;
        let state = info.state.clone().unwrap_or_default();
        if state.running != Some(true) {
            return Err(BackendError::ServiceExited {
                service: service.name.clone(),
                exit_code: state.exit_code.unwrap_or(-1),
                logs: container_log_tail(backend, id).await,
            });
        }
        let health = state.health.unwrap_or_default();
        let last_log = || {
            health
                .log
                .as_ref()
                .and_then(|log| log.last())
                .and_then(|entry| entry.output.clone())
                .map(|output| output.trim().to_owned())
                .unwrap_or_else(|| "(no health check has finished yet)".into())
        };
        match health.status {
            Some(HealthStatusEnum::STARTING) => {}
            Some(HealthStatusEnum::UNHEALTHY) => {
                return Err(BackendError::ServiceUnhealthy {
                    service: service.name.clone(),
                    last_log: last_log(),
                })
            }
            // Healthy, or no health check at all: running is all we can know.
            _ => return Ok(service_info(service, id, &info)),
        }
        let waited = started.elapsed();
        if waited >= backend.config.service_health_timeout {
            return Err(BackendError::ServiceTimeout {
                service: service.name.clone(),
                waited_secs: waited.as_secs(),
                last_log: last_log(),
            });
        }
        tokio::select! {
            () = sleep(poll) => {}
            () = cancel.cancelled() => return Err(BackendError::Cancelled),
        }
        poll = (poll * 2).min(HEALTH_POLL_MAX);
    }
}

fn service_info(service: &ServiceSpec, id: &str, info: &ContainerInspectResponse) -> ServiceInfo {
    let mut ports = BTreeMap::new();
    let published = info
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref());
    for (key, bindings) in published.into_iter().flatten() {
        let Some(host_port) = bindings
            .as_ref()
            .and_then(|b| b.iter().find_map(|binding| binding.host_port.clone()))
        else {
            continue;
        };
        // GitHub's `job.services.<id>.ports` is keyed by the bare port for TCP.
        let port = key.strip_suffix("/tcp").unwrap_or(key);
        ports.insert(port.to_owned(), host_port);
    }
    ServiceInfo {
        name: service.name.clone(),
        container_id: id.to_owned(),
        ports,
    }
}

async fn container_log_tail(backend: &DockerBackend, id: &str) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(SERVICE_LOG_TAIL)
        .build();
    let chunks: Vec<_> = backend.docker.logs(id, Some(options)).collect().await;
    let text: String = chunks
        .into_iter()
        .filter_map(Result::ok)
        .map(|chunk| String::from_utf8_lossy(&chunk.into_bytes()).into_owned())
        .collect();
    let text = text.trim();
    if text.is_empty() {
        "(none)".into()
    } else {
        text.to_owned()
    }
}
