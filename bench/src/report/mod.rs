//! What a benchmark run found: the JSON document and the computations on it
//! (`model`), the goals (`goals`), the rows and the console table
//! (`render`) and BENCHMARKS.md (`markdown`).

mod goals;
mod markdown;
mod model;
mod render;

pub use goals::evaluate;
pub use markdown::markdown;
pub use model::*;
pub use render::{console_table, cutover_line};
