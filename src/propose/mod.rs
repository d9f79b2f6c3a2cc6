//! propose
