"""``python -m app.models.train_head``: the same command as ``python -m app.train.head``."""

from app.train.head import main

if __name__ == "__main__":
    main()
