//! A Prometheus gate: one instant query (`GET /api/v1/query`) that must return a single
//! value, compared with the gate's bounds.

use http_body_util::Empty;
use hyper::{body::Bytes, Request};
use serde::Deserialize;

use super::{http::send, Target};
use crate::release::analysis::{PrometheusGate, Verdict};

/// Runs the gate's query: its one value, or why there is none.
pub async fn query(gate: &PrometheusGate) -> Result<f64, String> {
    let target = Target::parse(&gate.url).map_err(|e| e.to_string())?;
    let base = target.path.trim_end_matches('/');
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", &gate.query)
        .finish();
    let request = Request::get(format!("{base}/api/v1/query?{query}"))
        .header("host", target.authority.as_str())
        .header("user-agent", "balancer-analysis")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("http: {e}"))?;
    let (status, body) = send(&target, request).await?;
    if !status.is_success() {
        return Err(format!("Prometheus answered HTTP {status}"));
    }
    value(&body)
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    value: (f64, String),
}

/// The single value of a query's answer.
fn value(body: &[u8]) -> Result<f64, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if answer.status != "success" {
        return Err(format!(
            "the query failed: {}",
            answer.error.unwrap_or(answer.status)
        ));
    }
    let text = match answer.data {
        Some(Data::Scalar((_, v))) => v,
        Some(Data::Vector(series)) => match <[Series; 1]>::try_from(series) {
            Ok([one]) => one.value.1,
            Err(series) if series.is_empty() => return Err("empty result".into()),
            Err(series) => {
                return Err(format!(
                    "{} series: the query must return one",
                    series.len()
                ))
            }
        },
        Some(Data::Matrix(_) | Data::String(_)) | None => {
            return Err("not a single value: use an instant vector or a scalar".into())
        }
    };
    let v: f64 = text
        .parse()
        .map_err(|_| format!("not a number: {text:?}"))?;
    match v.is_nan() {
        true => Err("the value is NaN".into()),
        false => Ok(v),
    }
}

/// The gate's verdict on `value`.
pub fn judge(gate: &PrometheusGate, value: f64) -> (Verdict, String) {
    if let Some(max) = gate.max.filter(|&max| value > max) {
        return (Verdict::Fail, format!("{value} > max {max}"));
    }
    if let Some(min) = gate.min.filter(|&min| value < min) {
        return (Verdict::Fail, format!("{value} < min {min}"));
    }
    (Verdict::Pass, format!("{value} within bounds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_give_one_value_or_say_why_not() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(value(vector), Ok(0.25));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(value(scalar), Ok(3.0));
        for (body, why) in [
            (&br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#[..], "empty result"),
            (br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#, "2 series"),
            (br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"NaN"]}}"#, "NaN"),
            (br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#, "the query failed: parse error"),
            (br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#, "not a single value"),
            (b"<html>", "not a Prometheus answer"),
        ] {
            let err = value(body).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn bounds() {
        let gate = PrometheusGate {
            url: "http://198.18.0.1:9090".into(),
            query: "q".into(),
            max: Some(1.0),
            min: Some(0.5),
        };
        assert_eq!(judge(&gate, 0.75).0, Verdict::Pass);
        assert_eq!(judge(&gate, 1.5), (Verdict::Fail, "1.5 > max 1".into()));
        assert_eq!(judge(&gate, 0.25), (Verdict::Fail, "0.25 < min 0.5".into()));
    }
}
