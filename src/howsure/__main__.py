from howsure.cli import main

main()
