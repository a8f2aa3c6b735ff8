//! The HTTP service's library side: [`read`] answers Vital's REST reads (summaries, grouped time series) from the lake.

pub mod read;
