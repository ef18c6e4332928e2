"""The brupop apiserver: the only door through which agents change the cluster. It proves who is calling
(TokenReview plus a check that the calling pod is an agent on the node it speaks for), then does the write.
It also serves the CRD conversion webhook."""
