//! The cloud object stores (`s3://`, `gs://`, `az://`), built from the
//! standard environment variables, and how long premem waits on them. `object_store`'s own
//! defaults retry an unanswered request for up to three minutes (30 s per
//! attempt, ten retries, a 3-minute retry budget), so an endpoint or
//! credential service that accepts connections and never answers stalls a
//! run for minutes before its error. premem bounds the whole of a request,
//! retries included, by [`TIMEOUT_ENV`] seconds (default
//! [`DEFAULT_TIMEOUT_S`]).

use std::sync::Arc;
use std::time::Duration;

use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

/// Seconds a store request may go unanswered, retries included, before it
/// fails.
pub const TIMEOUT_ENV: &str = "PREMEM_STORE_TIMEOUT";
pub const DEFAULT_TIMEOUT_S: u64 = 60;

/// One attempt's limits within the total: object_store's 30 s per request
/// and 5 s to connect, or the total when it is shorter.
const ATTEMPT: Duration = Duration::from_secs(30);
const CONNECT: Duration = Duration::from_secs(5);

/// What bounds every cloud store's requests, from [`TIMEOUT_ENV`]; an
/// unusable value is an error naming the variable.
pub struct Limits {
    /// Client settings, as builder config pairs: set one by one, they keep
    /// the rest of what the builder read from the environment (e.g.
    /// `AWS_ALLOW_HTTP`), which replacing its whole `ClientOptions` would
    /// drop.
    pub client: [(ClientConfigKey, String); 2],
    pub retry: RetryConfig,
}

pub fn limits() -> Result<Limits, String> {
    let total = match std::env::var(TIMEOUT_ENV) {
        Err(_) => Duration::from_secs(DEFAULT_TIMEOUT_S),
        Ok(text) => parse_seconds(&text)
            .ok_or_else(|| format!("{TIMEOUT_ENV}={text:?}: expected a number of seconds > 0"))?,
    };
    let millis = |d: Duration| format!("{}ms", d.as_millis());
    Ok(Limits {
        client: [
            (ClientConfigKey::Timeout, millis(ATTEMPT.min(total))),
            (ClientConfigKey::ConnectTimeout, millis(CONNECT.min(total))),
        ],
        retry: RetryConfig {
            retry_timeout: total,
            ..RetryConfig::default()
        },
    })
}

/// The store of a cloud `scheme` at `location`, with [`limits`]; an
/// unknown scheme or a configuration the builder refuses is an error.
pub fn cloud_store(scheme: &str, location: &str) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let Limits { client, retry } = limits()?;
    let built = match scheme {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(location);
            for (key, value) in client {
                b = b.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            b.with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(location);
            for (key, value) in client {
                b = b.with_config(GoogleConfigKey::Client(key), value);
            }
            b.with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(location);
            for (key, value) in client {
                b = b.with_config(AzureConfigKey::Client(key), value);
            }
            b.with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        other => {
            return Err(format!(
                "scheme '{other}' is not supported (a local directory, file://, s3://, gs://, az://)"
            ));
        }
    };
    built.map_err(|e| format!("cannot configure the store: {e}"))
}

fn parse_seconds(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().parse().ok()?;
    (seconds > 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_and_bad_values_do_not() {
        assert_eq!(parse_seconds("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_seconds(" 60 "), Some(Duration::from_secs(60)));
        for bad in ["0", "-1", "soon", "", "inf", "NaN"] {
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
    }
}
