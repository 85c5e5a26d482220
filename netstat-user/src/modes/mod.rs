//! What the user asked netstat to do. Each mode wires the stages together
//! (sources, tracer, table, render) and owns no format of its own.
pub mod display;
pub mod history;
pub mod live;
pub mod probe_report;
pub mod record;
pub mod signals;
pub mod stream;
pub mod version;
