//! Multipart upload staging under the reserved folder. (Being written.)
