"""What a sweep starts from: the spec (``spec``), the data (``data``), the folds
(``cv``), and their resolution from what a front was given (``resolve``)."""
