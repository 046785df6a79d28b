//! What an infrastructure exit status means, for Crashed messages (spec §3.3).
//!
//! The explanations follow `prefect._internal.infrastructure_exit_codes`, so a run crashed
//! by this worker reads the same in the Prefect UI as one crashed by the Python worker.

/// An exit status explained: what happened and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub explanation: &'static str,
    pub resolution: &'static str,
}

/// Explains `code`. Unknown codes get a generic explanation.
#[must_use]
pub fn explain(code: i64) -> ExitInfo {
    let (explanation, resolution) = match code {
        0 => ("Process exited cleanly.", "No action needed."),
        -9 => (
            "Process exited due to a SIGKILL signal. Typically caused by the operating system terminating the process for exceeding memory limits, or by manual cancellation.",
            "Check whether the flow run exceeded its memory allocation. If running in a container, increase the memory limit. If this was intentional cancellation, no action is needed.",
        ),
        -15 => (
            "Process exited due to a SIGTERM signal. Typically caused by graceful shutdown or manual cancellation.",
            "If this was caused by cancellation, no action is needed. Otherwise, check for infrastructure scaling events or deployment rollovers.",
        ),
        1 => (
            "Process exited with a general error.",
            "Check the flow run logs for an unhandled exception or assertion error.",
        ),
        125 => (
            "Container failed to run (Docker/OCI exit code 125).",
            "Verify the container image exists, the entrypoint is correct, and the container runtime is healthy.",
        ),
        126 => (
            "Command found but not executable (permission denied).",
            "Check file permissions on the entrypoint script or binary. Ensure the file has the executable bit set.",
        ),
        127 => (
            "Command not found.",
            "Verify that the entrypoint command or script is installed in the execution environment. Check your PATH and container image contents.",
        ),
        137 => (
            "Process was killed, likely due to an out-of-memory (OOM) condition.",
            "Increase the memory allocation for the flow run infrastructure. In Kubernetes, raise the memory limit in the job template.",
        ),
        143 => (
            "Process received SIGTERM via the container runtime. This is the containerized equivalent of exit code -15.",
            "If this was caused by cancellation or a scaling event, no action is needed. Otherwise, check for pod evictions.",
        ),
        247 => (
            "Process was terminated due to high memory usage.",
            "Increase the memory allocation for the flow run infrastructure. Consider profiling memory usage to find the source of consumption.",
        ),
        _ => (
            "Process exited with an unexpected status code.",
            "Check the flow run logs and infrastructure logs for more details.",
        ),
    };
    ExitInfo {
        explanation,
        resolution,
    }
}

/// `Flow run infrastructure exited with non-zero status code <N>. <explanation>`, plus the
/// worker's own diagnosis when it has one. Code `-1` means the infrastructure has no exit
/// code (a deleted Job, a pod that never started): the diagnosis alone is the message.
#[must_use]
pub fn crashed_message(code: i64, detail: Option<&str>) -> String {
    if code == -1
        && let Some(d) = detail.filter(|d| !d.is_empty())
    {
        return d.to_owned();
    }
    let mut msg = format!(
        "Flow run infrastructure exited with non-zero status code {code}. {}",
        explain(code).explanation
    );
    if let Some(d) = detail.filter(|d| !d.is_empty()) {
        msg.push(' ');
        msg.push_str(d);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(
            crashed_message(1, None),
            "Flow run infrastructure exited with non-zero status code 1. Process exited with a general error."
        );
        assert!(
            crashed_message(137, Some("Pod was OOMKilled."))
                .ends_with("condition. Pod was OOMKilled.")
        );
        assert_eq!(
            explain(3).explanation,
            "Process exited with an unexpected status code."
        );
        assert_eq!(
            crashed_message(-1, Some("Kubernetes job was deleted")),
            "Kubernetes job was deleted"
        );
        assert!(crashed_message(-1, None).contains("status code -1"));
    }
}
