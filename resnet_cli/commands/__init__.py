"""One module per `resnet` subcommand. None of them imports torch at module level."""
