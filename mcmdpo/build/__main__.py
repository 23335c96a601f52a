from mcmdpo.build.cli import main_exit

main_exit()
