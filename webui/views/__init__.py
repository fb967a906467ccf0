"""The UI's blueprints, one per area."""

from .account import bp as account_bp
from .auth import bp as auth_bp
from .backup import bp as backup_bp
from .builds import bp as builds_bp
from .dashboard import bp as dashboard_bp
from .events import bp as events_bp
from .flakes import bp as flakes_bp
from .hosts import bp as hosts_bp
from .leases import bp as leases_bp
from .machines import bp as machines_bp
from .media import bp as media_bp
from .network import bp as network_bp
from .settings import bp as settings_bp
from .setup import bp as setup_bp
from .tokens import bp as tokens_bp
from .users import bp as users_bp
from .vpn import bp as vpn_bp

ALL_BLUEPRINTS = [setup_bp, auth_bp, dashboard_bp, hosts_bp, flakes_bp, builds_bp, leases_bp,
                  network_bp, settings_bp, events_bp, tokens_bp, machines_bp]
ALL_BLUEPRINTS += [vpn_bp, users_bp, account_bp, backup_bp, media_bp]
