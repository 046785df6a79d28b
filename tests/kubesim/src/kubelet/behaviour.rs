//! Scripted container behaviours chosen by image name (`sim/...`).

use std::time::Duration;

/// What the kubelet does with a container.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Run `command` + `args` as a local process (any non-`sim/` image).
    Process,
    /// `sim/exit:<code>`: run briefly, exit with `code`.
    Exit(i32),
    /// `sim/sleep:<seconds>`: Running that long, then exit 0 (no process).
    Sleep(Duration),
    /// `sim/pull-error`: ErrImagePull / ImagePullBackOff forever.
    PullError,
    /// `sim/invalid-image` (or an unknown `sim/` name): InvalidImageName.
    InvalidImage(String),
    /// `sim/config-error`: CreateContainerConfigError.
    ConfigError,
    /// `sim/unschedulable`: the pod never leaves Pending.
    Unschedulable,
    /// `sim/oom`: Running, then OOMKilled with exit code 137.
    Oom,
    /// `sim/evict[:<seconds>]`: Running, then the pod is Evicted.
    Evict(Duration),
}

/// How long scripted containers "run" before their scripted ending.
pub const SHORT_RUN: Duration = Duration::from_millis(200);

/// Pick the behaviour for an image.
pub fn from_image(image: &str) -> Behaviour {
    let Some(rest) = image.strip_prefix("sim/") else {
        return Behaviour::Process;
    };
    let (name, arg) = match rest.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (rest, None),
    };
    let secs = |a: Option<&str>, default: f64| {
        a.and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::from_secs_f64(default), Duration::from_secs_f64)
    };
    match name {
        "exit" => match arg.and_then(|a| a.parse::<i32>().ok()) {
            Some(code) => Behaviour::Exit(code),
            None => Behaviour::InvalidImage(format!(
                "sim/exit needs an exit code, e.g. sim/exit:1 (got {image:?})"
            )),
        },
        "sleep" => Behaviour::Sleep(secs(arg, 1.0)),
        "pull-error" => Behaviour::PullError,
        "invalid-image" => Behaviour::InvalidImage(format!(
            "Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format"
        )),
        "config-error" => Behaviour::ConfigError,
        "unschedulable" => Behaviour::Unschedulable,
        "oom" => Behaviour::Oom,
        "evict" => Behaviour::Evict(secs(arg, 1.0)),
        other => {
            Behaviour::InvalidImage(format!("unknown kubesim behaviour image \"sim/{other}\""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_images() {
        assert_eq!(from_image("python:3.12"), Behaviour::Process);
        assert_eq!(from_image("sim/exit:3"), Behaviour::Exit(3));
        assert_eq!(
            from_image("sim/sleep:2"),
            Behaviour::Sleep(Duration::from_secs(2))
        );
        assert_eq!(
            from_image("sim/evict"),
            Behaviour::Evict(Duration::from_secs(1))
        );
        assert!(matches!(from_image("sim/nope"), Behaviour::InvalidImage(_)));
    }
}
