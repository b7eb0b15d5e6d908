"""Applications of the library, each behind a ``nips-adv`` command: ``demo`` (the three tools on bundled
photos) and ``bench`` (speed on this machine)."""
