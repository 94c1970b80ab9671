//! The DINO-WM world model (see docs/MODEL_FORMAT.md).
