//! How errors read. A refusal of the apiserver reads as kubectl prints it,
//! `Error from server (NotFound): apps.gitops.kubectl-gitops.dev "web" not found`, instead of the
//! `Status` it arrived in; the context naming what was being done follows. kube's wrappers that
//! only prefix their cause (`ServiceError: …`) are left out.

use kube::core::Status;

/// kube's reason for an error answer whose body was not a `Status` (a proxy's page, or a path the
/// apiserver does not serve, such as a resource whose CRD is not installed).
const UNPARSED: &str = "Failed to parse error data";

/// An error as the user reads it: what the apiserver said, if it said anything, and the other
/// steps of the chain, outermost first.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    server: Option<String>,
    steps: Vec<String>,
}

/// An error and its causes (`anyhow::Error::as_ref` gives one).
pub type Chain<'a> = &'a (dyn std::error::Error + 'static);

fn read(err: Chain<'_>) -> Reading {
    let mut steps: Vec<String> = Vec::new();
    for cause in std::iter::successors(Some(err), |e| e.source()) {
        if let Some(kube_error) = cause.downcast_ref::<kube::Error>() {
            match kube_error {
                kube::Error::Api(status) => {
                    return Reading {
                        server: Some(server_line(status)),
                        steps,
                    };
                }
                // Their text is a prefix and their cause's; the cause follows.
                kube::Error::Service(_) | kube::Error::HyperError(_) => continue,
                _ => {}
            }
        }
        if let Some(status) = cause.downcast_ref::<Status>() {
            return Reading {
                server: Some(server_line(status)),
                steps,
            };
        }
        let text = cause.to_string();
        // A wrapper that prints its cause (`…: {0}`) makes the cause's own line a repeat.
        if steps.last().is_some_and(|outer| outer.ends_with(&text)) {
            continue;
        }
        steps.push(text);
    }
    Reading {
        server: None,
        steps,
    }
}

/// The lines `kubectl gitops` prints on stderr when a command fails. With an answer of the
/// apiserver, its kubectl line comes first and the context after it; otherwise a headline and its
/// causes.
pub fn lines(err: Chain<'_>) -> Vec<String> {
    let reading = read(err);
    match reading.server {
        Some(server) => std::iter::once(server)
            .chain(reading.steps.iter().map(|s| format!("  context: {s}")))
            .collect(),
        None => {
            let mut steps = reading.steps.iter();
            let headline = format!("error: {}", steps.next().map_or("", String::as_str));
            std::iter::once(headline)
                .chain(steps.map(|s| format!("  caused by: {s}")))
                .collect()
        }
    }
}

/// The error on one line, for logs, warnings and the sync history an app records: the context,
/// then what the apiserver said (as kubectl says it) or the causes.
pub fn one_line(err: Chain<'_>) -> String {
    let reading = read(err);
    reading
        .steps
        .into_iter()
        .chain(reading.server)
        .collect::<Vec<_>>()
        .join(": ")
}

/// What kubectl prints for an error answer (`cmdutil.StandardErrorMessage`).
pub fn server_line(status: &Status) -> String {
    let (reason, message) = if status.reason == UNPARSED {
        generic(status)
    } else {
        (status.reason.clone(), status.message.clone())
    };
    match reason.as_str() {
        "Unauthorized" => format!("error: You must be logged in to the server ({message})"),
        "" => format!("Error from server: {message}"),
        reason => format!("Error from server ({reason}): {message}"),
    }
}

/// The reason and message client-go gives an error answer without a `Status` body, from its HTTP
/// code (`errors.NewGenericServerResponse`); the body follows when it says more than the code.
fn generic(status: &Status) -> (String, String) {
    let (reason, message) = match status.code {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials",
        ),
        403 => (
            "Forbidden",
            "the server does not allow access to the requested resource",
        ),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        406 => (
            "NotAcceptable",
            "the server was unable to respond with a content type that the client supports",
        ),
        409 => ("Conflict", "the server reported a conflict"),
        415 => (
            "UnsupportedMediaType",
            "the server was unable to respond with a content type that the client supports",
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be \
             processing the request",
        ),
        code if code >= 500 => (
            "InternalError",
            "an error on the server has prevented the request from succeeding",
        ),
        _ => ("", "the server answered with an error"),
    };
    let body: String = status
        .message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .take(200)
        .collect();
    // The apiserver's own "404 page not found" says nothing the message does not.
    let says_more = !body.is_empty() && !body.ends_with("page not found");
    let message = if says_more {
        format!("{message} ({body})")
    } else {
        message.to_owned()
    };
    (reason.to_owned(), message)
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;
    use kube::core::response::StatusDetails;

    use super::*;

    fn not_found() -> kube::Error {
        let status = Status::failure(
            r#"apps.gitops.kubectl-gitops.dev "web" not found"#,
            "NotFound",
        )
        .with_code(404)
        .with_details(StatusDetails {
            name: "web".into(),
            group: "gitops.kubectl-gitops.dev".into(),
            kind: "apps".into(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 0,
        });
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn an_api_error_reads_as_kubectl_prints_it_with_its_context_after() {
        let err = Err::<(), _>(not_found())
            .context("cannot read app shop/web")
            .context("cannot sync")
            .expect_err("an error");
        assert_eq!(
            lines(err.as_ref()),
            [
                r#"Error from server (NotFound): apps.gitops.kubectl-gitops.dev "web" not found"#,
                "  context: cannot sync",
                "  context: cannot read app shop/web",
            ]
        );
        assert_eq!(
            one_line(err.as_ref()),
            r#"cannot sync: cannot read app shop/web: Error from server (NotFound): apps.gitops.kubectl-gitops.dev "web" not found"#
        );
        for line in lines(err.as_ref()) {
            assert!(!line.contains("Status {"), "no debug dump: {line}");
        }
    }

    #[test]
    fn forbidden_and_unauthorized_read_as_kubectl_prints_them() {
        let forbidden = Status::failure(
            r#"apps.gitops.kubectl-gitops.dev "web" is forbidden: User "someone" cannot get resource "apps""#,
            "Forbidden",
        )
        .with_code(403);
        assert_eq!(
            server_line(&forbidden),
            r#"Error from server (Forbidden): apps.gitops.kubectl-gitops.dev "web" is forbidden: User "someone" cannot get resource "apps""#
        );
        let unauthorized = Status::failure("Unauthorized", "Unauthorized").with_code(401);
        assert_eq!(
            server_line(&unauthorized),
            "error: You must be logged in to the server (Unauthorized)"
        );
        let no_reason = Status::failure("something broke", "").with_code(500);
        assert_eq!(
            server_line(&no_reason),
            "Error from server: something broke"
        );
    }

    #[test]
    fn an_answer_without_a_status_reads_by_its_code() {
        let crd_missing = Status::failure("404 page not found", UNPARSED).with_code(404);
        assert_eq!(
            server_line(&crd_missing),
            "Error from server (NotFound): the server could not find the requested resource"
        );
        let proxy = Status::failure("<html>bad gateway</html>\nmore", UNPARSED).with_code(502);
        assert_eq!(
            server_line(&proxy),
            "Error from server (InternalError): an error on the server has prevented the request \
             from succeeding (<html>bad gateway</html>)"
        );
    }

    #[test]
    fn other_errors_keep_headline_and_causes_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let io = std::io::Error::other("connection refused");
        let err = anyhow::Error::new(Wrapper(io)).context("cannot list apps");
        assert_eq!(
            lines(err.as_ref()),
            [
                "error: cannot list apps",
                "  caused by: wrapper: connection refused"
            ]
        );
        assert_eq!(
            one_line(err.as_ref()),
            "cannot list apps: wrapper: connection refused"
        );
    }

    #[test]
    fn kube_service_wrappers_give_way_to_their_cause() {
        let timed_out: Box<dyn std::error::Error + Send + Sync> =
            Box::new(std::io::Error::other("took too long"));
        let err = anyhow::Error::new(kube::Error::Service(timed_out)).context("cannot list apps");
        assert_eq!(
            lines(err.as_ref()),
            ["error: cannot list apps", "  caused by: took too long"]
        );
    }
}
